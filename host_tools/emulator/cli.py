# `zeroburn board run|serve`: boot a virtual ESP32 and follow its console, or put it behind a
# pseudo-terminal (and optionally a TCP port) that mpremote drives like a real board's USB serial.
import json
import signal
import sys
import threading
import time
from pathlib import Path

from host_tools.emulator.board import DEFAULT_HEAP
from host_tools.errors import ZeroburnError

ACK_MARKER = r"\[tel\] acked #(\d+)"


def configure(parser, name):
    sub = parser.add_subparsers(dest="board_command", metavar="SUBCOMMAND")
    parser.set_defaults(handler=lambda args: parser.print_help() or 1)

    def common(p, heap):
        p.add_argument("--flash", required=True, help="the board's flash folder")
        p.add_argument("--mac", help="the board's MAC (default: random Espressif-looking)")
        p.add_argument(
            "--runtime",
            default="micropython",
            choices=["micropython", "cpython"],
            help="interpreter the firmware runs in (default: the MicroPython VM)",
        )
        p.add_argument("--heap", help=f"MicroPython GC heap size (default {heap})")
        p.add_argument(
            "--fault",
            action="append",
            default=[],
            metavar="NAME@SECONDS[=VALUE]",
            help="inject a fault after SECONDS: power-cut, reset, wifi-down, wifi-up, "
            "wifi-password=PW, partition-on, partition-off, clock-drift=S (repeatable)",
        )
        p.add_argument(
            "--host",
            action="append",
            default=[],
            metavar="NAME=IP",
            help="extra host map entry (default maps *.aliyuncs.com and localhost to 127.0.0.1)",
        )

    run = sub.add_parser("run", help="install the firmware if missing, boot, stream the console")
    common(run, f"{DEFAULT_HEAP}: what the firmware's full cycle needs")
    run.add_argument("--config", help="device config.json to install")
    run.add_argument(
        "--platform",
        metavar="STATE_DIR",
        help="write the config for the local platform emulator in STATE_DIR",
    )
    run.add_argument("--product-key", help="with --platform: the product")
    run.add_argument("--product-secret", help="with --platform: override the product secret")
    run.add_argument("--signmethod", help="with --platform: hmacsha1, hmacsha256 or hmacmd5")
    run.add_argument(
        "--platform-port",
        type=int,
        metavar="PORT",
        help="with --platform: its TLS port (default: what its state folder records)",
    )
    run.add_argument(
        "--until-messages",
        type=int,
        default=0,
        metavar="N",
        help="exit 0 once N telemetry messages are acknowledged",
    )
    run.add_argument(
        "--timeout",
        type=float,
        default=0,
        metavar="S",
        help="give up after S seconds (exit 1 with the reason)",
    )
    run.set_defaults(handler=_run)

    serve = sub.add_parser("serve", help="the board behind a pty (mpremote connect <pty>)")
    # mpremote's mount helper alone needs ~70 KiB; a real ESP32 has over 100 KiB free at the REPL
    common(serve, "128K")
    serve.add_argument("--link", help="keep a stable symlink to the pty at this path")
    serve.add_argument("--port", type=int, help="also serve the line on socket://127.0.0.1:PORT")
    serve.add_argument("--echo", action="store_true", help="copy the console to stderr")
    serve.set_defaults(handler=_serve)


def _host_map(entries):
    from host_tools.emulator.board import DEFAULT_HOSTS

    hosts = dict(DEFAULT_HOSTS)
    for e in entries:
        name, sep, ip = e.partition("=")
        if not sep or not name or not ip:
            raise ZeroburnError(f"--host {e!r}: use NAME=IP, e.g. broker.example=127.0.0.1")
        hosts[name] = ip
    return hosts


def _check_args(args):
    """Refuse a bad --mac or --heap before anything is created or written."""
    from host_tools.emulator.board import parse_heap, parse_mac

    try:
        if args.mac:
            parse_mac(args.mac)
        parse_heap(args.heap)
    except ValueError as e:
        raise ZeroburnError(str(e))
    _host_map(args.host)
    return _faults(args.fault)


def _faults(specs):
    from host_tools.emulator.board import FAULTS

    out = []
    for spec in specs:
        name, sep, rest = spec.partition("@")
        when, _, value = rest.partition("=")
        try:
            seconds = float(when)
        except ValueError:
            seconds = -1
        if not sep or name not in FAULTS or seconds < 0:
            raise ZeroburnError(
                f"--fault {spec!r}: use NAME@SECONDS[=VALUE] with NAME one of {', '.join(FAULTS)}"
            )
        out.append((seconds, name, value or None))
    return out


def _schedule(board, faults):
    for seconds, name, value in faults:
        try:
            board.schedule(seconds, name, value)
        except ValueError as e:
            raise ZeroburnError(f"--fault {name}: {e}")


def _make_board(args, console):
    from host_tools.emulator.board import VirtualBoard

    try:
        return VirtualBoard(
            args.flash,
            mac=args.mac,
            runtime=args.runtime,
            heap=args.heap,
            host_map=_host_map(args.host),
            console=console,
        )
    except ValueError as e:
        raise ZeroburnError(str(e))


def _wait_signal(stop):
    def handler(signum, frame):
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def _serve(args):
    from host_tools.emulator.serial import PtyPort, SerialBridge, TcpPort

    args.heap = args.heap or "128K"
    faults = _check_args(args)
    board = _make_board(args, sys.stderr.buffer if args.echo else None)
    bridge = SerialBridge(board)
    pty = PtyPort(bridge, args.link)
    tcp = TcpPort(bridge, args.port) if args.port is not None else None
    stop = threading.Event()
    _wait_signal(stop)
    board.start()
    _schedule(board, faults)
    ready = {"pty": pty.path, "mac": board.mac, "flash": str(board.flash)}
    if args.link:
        ready["link"] = str(Path(args.link).absolute())
    if tcp:
        ready["socket"] = f"socket://127.0.0.1:{tcp.port}"
    print(json.dumps(ready), flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        board.stop()
        pty.close()
        if tcp:
            tcp.close()
    return 0


def _platform_config(args):
    try:
        from host_tools.build.config_cmd import platform_config
    except ImportError:
        raise ZeroburnError("--platform needs host_tools.build.config_cmd.platform_config")
    if not args.product_key:
        raise ZeroburnError("--platform needs --product-key")
    kwargs = {}
    if args.signmethod:
        kwargs["signmethod"] = args.signmethod
    if args.platform_port:
        kwargs["port"] = args.platform_port
    try:
        return platform_config(
            args.platform, args.product_key, product_secret=args.product_secret, **kwargs
        )
    except ValueError as e:
        raise ZeroburnError(str(e))


def _acked_counter(args, board, config):
    """How many telemetry messages the platform acknowledged since the board started: from the
    platform's SQLite messages for this device when its state folder is known (the honest
    count), else from the firmware's `[tel] acked #<n>` console lines."""
    import re

    if args.platform:
        return _platform_counter(Path(args.platform), board, config)
    rx = re.compile(ACK_MARKER)

    def from_console():
        best = 0
        for line in list(board.lines):
            m = rx.search(line)
            if m:
                best = max(best, int(m.group(1)))
        return best

    return from_console


def _platform_counter(state, board, config):
    import sqlite3

    from host_tools.platform.registry import DB_FILE

    pk = config["product_key"]
    dn = config.get("device_name_prefix", "") + board.mac.replace(":", "")
    topic = f"/{pk}/{dn}/user/update"
    since = time.time()
    db = state / DB_FILE

    def from_platform():
        try:
            con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
            try:
                row = con.execute(
                    "SELECT COUNT(*) FROM messages WHERE product_key = ? AND device_name = ?"
                    " AND topic = ? AND time >= ?",
                    (pk, dn, topic, since),
                ).fetchone()
            finally:
                con.close()
        except sqlite3.Error:
            return 0
        return row[0]

    return from_platform


def _run(args):
    args.heap = args.heap or DEFAULT_HEAP
    faults = _check_args(args)
    flash = Path(args.flash)
    if args.config and args.platform:
        raise ZeroburnError("give --config or --platform, not both")
    config = None
    ca_pem = None
    if args.platform:
        from host_tools.platform.local import platform_ca

        config = _platform_config(args)
        ca = platform_ca(args.platform)
        if not ca.exists():
            raise ZeroburnError(f"{ca} is missing: is {args.platform} a platform state folder?")
        ca_pem = ca.read_text()
    elif args.config:
        config = args.config
    elif not (flash / "config.json").exists():
        raise ZeroburnError(f"{flash} has no config.json: give --config FILE or --platform DIR")

    out = sys.stdout.buffer
    board = _make_board(args, lambda data: (out.write(data), out.flush()))
    if config is not None or not _installed(flash, args.runtime):
        board.install(config=config, ca_pem=ca_pem)
    count = _acked_counter(args, board, config if isinstance(config, dict) else {})
    stop = threading.Event()
    _wait_signal(stop)
    board.start()
    _schedule(board, faults)
    start = time.monotonic()
    reason = None
    try:
        while not stop.wait(0.2):
            if args.until_messages and count() >= args.until_messages:
                return 0
            if board.state == "halted":
                reason = f"the interpreter exited (status {board.exits[-1][1]})"
                break
            if args.timeout and time.monotonic() - start > args.timeout:
                done = count()
                reason = (
                    f"timed out after {args.timeout:g}s with {done} of "
                    f"{args.until_messages} messages acknowledged"
                    if args.until_messages
                    else f"stopped after {args.timeout:g}s"
                )
                if not args.until_messages:
                    return 0
                break
        else:
            if not args.until_messages:
                return 130  # Ctrl-C ends a plain run, as for any foreground command
            reason = "interrupted"
    finally:
        board.stop()
    raise ZeroburnError(f"board {board.mac}: {reason}")


def _installed(flash, runtime):
    ext = ".mpy" if runtime == "micropython" else ".py"
    return (flash / "main.py").exists() and (flash / "lib" / "zeroburn" / f"app{ext}").exists()

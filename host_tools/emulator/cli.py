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
        p.add_argument(
            "--adc",
            action="append",
            default=[],
            metavar="GPIO=U16",
            help="hold an analog input (machine.ADC) at U16, 0..65535 of full scale "
            "(default: mid scale, 32768) (repeatable)",
        )

    run = sub.add_parser("run", help="install the firmware if missing, boot, stream the console")
    common(run, f"{DEFAULT_HEAP}: below what an ESP32 gives, see docs/virtual-boards.md")
    run.add_argument(
        "--config",
        metavar="FILE",
        help="device config.json to install (secrets may come from ZEROBURN_PRODUCT_SECRET and "
        "ZEROBURN_WIFI_PASSWORD); with --platform, its endpoint and CA are replaced",
    )
    run.add_argument(
        "--ca",
        metavar="FILE",
        help="PEM bundle to install as ca.pem with --config (with --platform: the platform's)",
    )
    run.add_argument(
        "--app",
        metavar="DIR",
        help="your application folder (main.py, drivers, files) instead of the example main.py",
    )
    run.add_argument(
        "--platform",
        metavar="STATE_DIR",
        help="point the board at the local platform emulator in STATE_DIR (writes the config)",
    )
    run.add_argument("--product-key", metavar="PK", help="with --platform: the product")
    run.add_argument(
        "--product-secret",
        metavar="PS",
        help="with --platform: a secret other than the platform's (to try a wrong one)",
    )
    run.add_argument(
        "--signmethod",
        help="with --platform: hmacsha1 (default), hmacsha256 or hmacmd5",
    )
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
        help="exit 0 once N telemetry messages are acknowledged (default 0: run until stopped)",
    )
    run.add_argument(
        "--timeout",
        type=float,
        default=0,
        metavar="S",
        help="stop after S seconds; with --until-messages that is a failure, exit 1 with the "
        "reason (default 0: no limit)",
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
    _adc_inputs(args.adc)
    return _faults(args.fault)


def _adc_inputs(specs):
    """[(gpio, u16)] of --adc GPIO=U16 values."""
    out = []
    for spec in specs:
        pin, _, value = spec.partition("=")
        try:
            gpio, u16 = int(pin), int(value, 0)
        except ValueError:
            gpio = u16 = -1
        if gpio < 0 or not 0 <= u16 <= 0xFFFF:
            raise ZeroburnError(f"--adc {spec!r}: use GPIO=U16, U16 from 0 to 65535")
        out.append((gpio, u16))
    return out


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
        board = VirtualBoard(
            args.flash,
            mac=args.mac,
            runtime=args.runtime,
            heap=args.heap,
            host_map=_host_map(args.host),
            console=console,
        )
        for gpio, u16 in _adc_inputs(args.adc):
            board.set_adc(gpio, u16)
        return board
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


# What --platform replaces in a --config meant for real Aliyun: where the board connects and
# what it trusts. Everything else (Wi-Fi, intervals, prefix, product) stays the user's.
ENDPOINT_KEYS = ("region", "instance_id", "host", "port", "ca_file", "securemode")


def _platform_config(args, base=None):
    """The config for the local platform: written from --product-key, or (base given) the
    user's own config with only its endpoint and CA replaced; the product is created in the
    platform with the config's key and secret when it is not there yet."""
    try:
        from host_tools.build.config_cmd import platform_config
        from host_tools.platform.local import platform_secret
    except ImportError:
        raise ZeroburnError("--platform needs host_tools.build.config_cmd.platform_config")
    kwargs = {}
    if args.signmethod:
        kwargs["signmethod"] = args.signmethod
    if args.platform_port:
        kwargs["port"] = args.platform_port
    secret = args.product_secret
    if base is not None:
        if args.product_key or args.product_secret:
            raise ZeroburnError("with --config, the product comes from the file")
        pk, secret = base["product_key"], base["product_secret"]
        kwargs.update({k: v for k, v in base.items() if k not in ENDPOINT_KEYS})
        del kwargs["product_key"], kwargs["product_secret"]
        try:
            known = platform_secret(args.platform, pk)
        except ValueError:
            known = None
        if known is None:
            from host_tools.platform.registry import Registry

            reg = Registry(args.platform)
            try:
                reg.add_product(pk, secret)
            except ValueError as e:
                raise ZeroburnError(f"cannot add product {pk} to {args.platform}: {e}")
            finally:
                reg.close()
            print(
                f"zeroburn: product {pk} added to the local platform in {args.platform} "
                "(with the secret from your config)",
                file=sys.stderr,
            )
        elif known != secret:
            raise ZeroburnError(
                f"product {pk} is in {args.platform} with another secret than your config's: "
                "the board could never register (use another state folder, or the same secret)"
            )
    elif not args.product_key:
        raise ZeroburnError("--platform needs --product-key (or --config FILE)")
    else:
        pk = args.product_key
    try:
        return platform_config(args.platform, pk, product_secret=secret, **kwargs)
    except ValueError as e:
        raise ZeroburnError(str(e))


def _user_config(path):
    """A --config file as `flash` reads it: secrets filled from the environment, validated."""
    from host_tools.build import config_cmd

    try:
        d, _cfg, _sources = config_cmd.load(path)
    except ValueError as e:
        raise ZeroburnError(str(e))
    return {k: v for k, v in d.items() if not k.startswith("_")}


def _read_ca(path):
    try:
        return Path(path).read_text()
    except OSError as e:
        raise ZeroburnError(f"cannot read the CA bundle {path}: {e.strerror}")


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
    config = None
    ca_pem = None
    if args.platform:
        from host_tools.platform.local import platform_ca

        if args.ca:
            raise ZeroburnError("--ca goes with --config alone: --platform installs its own CA")
        base = _user_config(args.config) if args.config else None
        config = _platform_config(args, base)
        ca = platform_ca(args.platform)
        if not ca.exists():
            raise ZeroburnError(f"{ca} is missing: is {args.platform} a platform state folder?")
        ca_pem = ca.read_text()
        if base is not None:
            changed = f"{config['region']}:{config['port']}, CA {ca}"
            print(f"zeroburn: against the local platform: endpoint {changed}", file=sys.stderr)
    elif args.config:
        config = _user_config(args.config)
        ca_file = config.get("ca_file") or "ca.pem"
        if args.ca:
            ca_pem = _read_ca(args.ca)
        elif not (flash / ca_file).exists():
            raise ZeroburnError(
                f"{flash} has no {ca_file} for this config: give --ca FILE (the local "
                "platform's is <state>/ca.pem), or use --platform DIR"
            )
    elif args.ca:
        raise ZeroburnError("--ca goes with --config")
    elif not (flash / "config.json").exists():
        raise ZeroburnError(f"{flash} has no config.json: give --config FILE or --platform DIR")

    out = sys.stdout.buffer
    board = _make_board(args, lambda data: (out.write(data), out.flush()))
    try:
        if config is not None or args.app or not _installed(flash, args.runtime):
            board.install(config=config, ca_pem=ca_pem, app=args.app)
        return _follow(args, board, config, faults)
    finally:
        board.stop()  # also on a failed install: nothing is left in /tmp


def _follow(args, board, config, faults):
    from host_tools.build.markers import Console

    count = _acked_counter(args, board, config if isinstance(config, dict) else {})
    watch = Console()
    stop = threading.Event()
    _wait_signal(stop)
    board.start()
    _schedule(board, faults)
    start = time.monotonic()
    seen = 0
    idle_polls = 0
    reason = None
    while not stop.wait(0.2):
        lines = board.lines
        while seen < len(lines):
            watch.feed(lines[seen])
            seen += 1
        if args.until_messages and count() >= args.until_messages:
            return 0
        if watch.failure:
            reason = watch.failure
            break
        if board.state == "halted":
            reason = f"the interpreter exited (status {board.exits[-1][1]})"
            break
        # main.py returned: the board sits at its REPL, the firmware runs no more
        idle = board.state == "on" and not board.running
        idle_polls = idle_polls + 1 if idle else 0
        if idle_polls >= 3:
            reason = "the firmware stopped (main.py returned to the REPL)"
            break
        if args.timeout and time.monotonic() - start > args.timeout:
            if not args.until_messages:
                return 0
            done = count()
            hint = f"; last warning: {watch.last_warning}" if watch.last_warning else ""
            reason = (
                f"timed out after {args.timeout:g}s with {done} of "
                f"{args.until_messages} messages acknowledged{hint}"
            )
            break
    else:
        if not args.until_messages:
            print(file=sys.stderr)
            print("zeroburn: stopped (Ctrl-C)", file=sys.stderr)
            return 130  # Ctrl-C ends a plain run, as for any foreground command
        reason = "interrupted"
    raise ZeroburnError(f"board {board.mac}: {reason}")


def _installed(flash, runtime):
    ext = ".mpy" if runtime == "micropython" else ".py"
    return (flash / "main.py").exists() and (flash / "lib" / "zeroburn" / f"app{ext}").exists()

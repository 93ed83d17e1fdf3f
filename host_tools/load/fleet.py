# `zeroburn fleet`: N virtual boards running the real firmware against the platform emulator,
# with a live progress line, optional chaos (Wi-Fi drops, platform restarts, power cuts) and a
# summary that proves, from the platform's own SQLite, that no acknowledged message was lost.
import json
import random
import re
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

from host_tools.emulator.board import DEFAULT_HEAP
from host_tools.errors import ZeroburnError
from host_tools.load import loadgen as lg

_REGISTERED = re.compile(r"\[reg\] registered as (\S+)")
_ONLINE = re.compile(r"\[mqtt\] online as (\S+)")
_ACKED = re.compile(r"\[tel\] acked #(\d+)")
_ERROR = re.compile(r"\[(\w+)\] (E|W): (.*)")
_CRASH = re.compile(r"^(\w+Error|\w+Exception): ")  # an uncaught exception's last line
_BOARD = re.compile(r"^\[board\] (.*)")  # what the virtual board itself reports


def mac_for(i, seed=0):
    """A locally administered unicast MAC, distinct per board index (and per seed)."""
    n = (seed * 1_000_003 + i) & 0xFFFFFFFF
    return "02:5a:%02x:%02x:%02x:%02x" % (n >> 24 & 255, n >> 16 & 255, n >> 8 & 255, n & 255)


def error_cause(phase, text):
    """A short, stable cause for tallies: the phase and the first words, numbers stripped."""
    text = re.sub(r"\(.*", "", text)
    text = re.sub(r"[0-9]+", "N", text).strip().rstrip(":")
    return f"{phase}: {' '.join(text.split()[:6])}"


class BoardStats:
    """What one board's console said, with times (monotonic seconds)."""

    def __init__(self, index, mac):
        self.index = index
        self.mac = mac
        self.dn = None
        self.booted: float | None = None
        self.registered = None
        self.online = None
        self.first_ack = None
        self.acked = []  # message ids in the order acknowledged
        self.errors = {}  # cause -> count (warnings and errors from the console)
        # set when the run is over and the boards are powered off: what a board says while
        # its sockets are being closed under it (ECONNRESET) is not an error of the run
        self.stopping = False
        self.lock = threading.Lock()
        self.lines_seen = 0
        self._partial = b""

    def __call__(self, data):
        """Console bytes from the board (VirtualBoard's console callable)."""
        parts = (self._partial + data).split(b"\n")
        self._partial = parts.pop()
        for p in parts:
            self.feed(p.rstrip(b"\r").decode("utf-8", "replace"))

    def feed(self, line):
        now = time.monotonic()
        with self.lock:
            self.lines_seen += 1
            m = _ACKED.search(line)
            if m:
                self.acked.append(int(m.group(1)))
                if self.first_ack is None:
                    self.first_ack = now
                return
            m = _REGISTERED.search(line)
            if m:
                self.dn = m.group(1)
                self.registered = self.registered or now
                return
            m = _ONLINE.search(line)
            if m:
                self.dn = m.group(1)
                self.online = self.online or now
                return
            if self.stopping:
                return
            m = _ERROR.search(line)
            if m:
                cause = error_cause(m.group(1), m.group(3))
            elif crash := _CRASH.match(line):
                cause = "crash: " + crash.group(1)
            elif board := _BOARD.match(line):
                cause = error_cause("board", board.group(1))
            else:
                return
            self.errors[cause] = self.errors.get(cause, 0) + 1


def summarize_fleet(boards, stored_keys, started, ended):
    """The fleet summary from per-board stats and what the platform stored.

    stored_keys: iterable of (deviceName, message id) the platform holds.
    """
    n = len(boards)
    regs = [b.registered for b in boards if b.registered is not None]
    boot_to_ack = [
        (b.first_ack - b.booted) * 1000.0
        for b in boards
        if b.first_ack is not None and b.booted is not None
    ]
    errors = {}
    for b in boards:
        for cause, k in b.errors.items():
            errors[cause] = errors.get(cause, 0) + k
    sent = [(b.dn, mid) for b in boards for mid in b.acked]
    loss = lg.message_loss(sent, stored_keys)
    acked = len(sent)
    span = max(1e-9, ended - started)
    reg_span = (max(regs) - started) if regs else None
    return {
        "devices": n,
        "registered": len(regs),
        "online": sum(1 for b in boards if b.online is not None),
        "acked": acked,
        "seconds": round(span, 2),
        "registrations_per_s": round(len(regs) / reg_span, 2) if reg_span else None,
        "messages_per_s": round(acked / span, 2),
        "boot_to_first_ack_ms": lg.summarize(boot_to_ack),
        "errors": dict(sorted(errors.items(), key=lambda kv: -kv[1])),
        "messages_lost": loss["lost"],
        "duplicates": loss["duplicates"],
        "stored": loss["stored"],
        "lost_keys": [list(k) for k in loss["lost_keys"]],
    }


def stored_message_keys(registry, pk, device_names):
    """(deviceName, id) for every telemetry message the platform stored for these devices.
    One read of the product's messages (the platform keeps no per-device index on them)."""
    wanted = set(device_names)
    keys = []
    for m in registry.messages(product_key=pk, limit=None):
        dn, topic = m.get("device_name"), m.get("topic", "")
        if dn not in wanted or not topic.endswith(("/user/update", "/property/post")):
            continue
        try:
            keys.append((dn, int(json.loads(bytes(m["payload"]))["id"])))
        except (ValueError, TypeError, KeyError):
            continue
    return keys


class Progress:
    """One status line on stderr, redrawn in place on a terminal, else printed now and then."""

    def __init__(self, boards, messages, stream=sys.stderr, every=0.5):
        self.boards = boards
        self.messages = messages
        self.stream = stream
        self.tty = stream.isatty()
        self.every = every if self.tty else 5.0
        self.last = 0.0
        self.extra = ""

    def line(self):
        n = len(self.boards)
        reg = sum(1 for b in self.boards if b.registered)
        onl = sum(1 for b in self.boards if b.online)
        acked = sum(min(len(set(b.acked)), self.messages) for b in self.boards)
        errs = sum(sum(b.errors.values()) for b in self.boards)
        return (
            f"fleet: registered {reg}/{n}  online {onl}/{n}  "
            f"acked {acked}/{n * self.messages}  errors {errs}{self.extra}"
        )

    def tick(self, force=False):
        now = time.monotonic()
        if not force and now - self.last < self.every:
            return
        self.last = now
        if self.tty:
            self.stream.write("\r\x1b[K" + self.line())
        else:
            self.stream.write(self.line() + "\n")
        self.stream.flush()

    def done(self):
        self.tick(force=True)
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


class Chaos:
    """Bounded fault injection: at most `budget` faults, spaced by at least `gap` seconds."""

    KINDS = ("wifi_drop", "power_cut", "platform_restart")

    def __init__(self, seed, budget, gap=2.0, kinds=KINDS):
        self.rng = random.Random(seed)
        self.budget = budget
        self.gap = gap
        self.kinds = kinds
        self.next_at = time.monotonic() + gap
        self.done = []  # (kind, board index or None)

    def due(self):
        return self.budget > 0 and time.monotonic() >= self.next_at

    def pick(self, n_boards):
        self.budget -= 1
        self.next_at = time.monotonic() + self.gap * (1 + self.rng.random())
        kind = self.rng.choice(self.kinds)
        target = None if kind == "platform_restart" else self.rng.randrange(n_boards)
        self.done.append((kind, target))
        return kind, target


def run_fleet(
    devices,
    messages=5,
    interval=1,
    runtime="cpython",
    platform_state=None,
    chaos=False,
    timeout=None,
    seed=None,
    work=None,
    progress_stream=sys.stderr,
    heap=DEFAULT_HEAP,
    app=None,
):
    """Boot `devices` boards, wait for each to have `messages` acknowledged, return the summary."""
    from host_tools.build import staging
    from host_tools.build.config_cmd import platform_config
    from host_tools.emulator.board import VirtualBoard
    from host_tools.platform.server import Platform

    if devices < 1:
        raise ZeroburnError("--devices must be at least 1")
    if messages < 1:
        raise ZeroburnError("--messages must be at least 1")
    if timeout is None:
        timeout = 60 + devices * (0.5 if runtime == "cpython" else 2) + messages * interval * 2
        timeout += 60 if chaos else 0
    if seed is None:
        # fresh MACs each run: a kept platform state allows only 5 activations per deviceName
        seed = random.randrange(1 << 16)
    lg.raise_nofile(4 * devices + 256)
    own_work = work is None
    work = Path(work or tempfile.mkdtemp(prefix="zeroburn-fleet-"))
    state = Path(platform_state) if platform_state else work / "platform"
    plat = running_platform(state)
    external = plat is not None
    if not external:
        plat = Platform(state, mqtt_port=0, mqtts_port=0)
        plat.start()
    boards, stats = [], []
    try:
        pk, ps = plat.registry.add_product()
        cfg = platform_config(state, pk, ps, port=plat.mqtts_port)
        cfg["interval_s"] = interval
        template = work / "template"
        staging.stage(
            template,
            config=cfg,
            ca_pem=Path(plat.ca_path).read_text(),
            runtime=runtime,
            app=app,
        )
        prewarm_board_runtime(runtime)
        progress = Progress(stats, messages, progress_stream)
        kinds = Chaos.KINDS if not external else ("wifi_drop", "power_cut")  # not ours to restart
        ch = Chaos(seed, budget=max(3, devices // 2), kinds=kinds) if chaos else None
        started = time.monotonic()
        for i in range(devices):
            mac = mac_for(i, seed)
            flash = work / "boards" / mac.replace(":", "")
            shutil.copytree(template, flash, dirs_exist_ok=True)
            st = BoardStats(i, mac)
            stats.append(st)
            board = VirtualBoard(flash, mac=mac, runtime=runtime, heap=heap, console=st)
            st.booted = time.monotonic()
            board.start()
            boards.append(board)
            if runtime == "micropython":
                # one VM process at a time: wait (bounded) until this one prints past the ROM
                # line, so process starts do not pile up on the host at once
                end = time.monotonic() + 10
                while st.lines_seen < 2 and time.monotonic() < end:
                    time.sleep(0.01)
            progress.tick()
        deadline = started + timeout
        after_chaos = [0] * devices  # acks each board had when the last fault struck
        while time.monotonic() < deadline:
            if _finished(stats, messages, ch, after_chaos):
                break
            if ch is not None and ch.due():
                _inject(ch, boards, plat, progress)
                after_chaos = [len(s.acked) for s in stats]
            progress.tick()
            time.sleep(0.05)
        ended = time.monotonic()
        progress.done()
        for st in stats:
            st.stopping = True
        for b in boards:
            b.stop()
        boards = []
        names = sorted({s.dn for s in stats if s.dn})
        summary = summarize_fleet(
            stats, stored_message_keys(plat.registry, pk, names), started, ended
        )
        summary["runtime"] = runtime
        summary["seed"] = seed
        summary["messages_per_device"] = messages
        summary["complete"] = _finished(stats, messages, ch, after_chaos)
        if ch is not None:
            summary["chaos"] = _tally([k for k, _ in ch.done])
        return summary
    finally:
        for b in boards:
            try:
                b.stop()
            except Exception:
                pass
        plat.stop()
        if external:
            plat.registry.close()
        if own_work:
            shutil.rmtree(work, ignore_errors=True)


class _RunningPlatform:
    """A platform another process serves (`zeroburn platform serve --state DIR`), found through
    the ready file it keeps in its state folder; its SQLite is opened directly."""

    def __init__(self, state, ready):
        from host_tools.platform.registry import Registry

        self.mqtt_port, self.mqtts_port, self.ca_path = ready["mqtt"], ready["mqtts"], ready["ca"]
        self.registry = Registry(state)

    def stop(self):
        pass  # not ours


def running_platform(state):
    """The platform serving `state` right now, or None (then the fleet starts its own)."""
    import socket

    try:
        ready = json.loads((Path(state) / "serve.json").read_text())
        with socket.create_connection(("127.0.0.1", ready["mqtts"]), timeout=2):
            pass
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return _RunningPlatform(state, ready)


def _finished(stats, messages, chaos, after_chaos):
    """Every board has its messages acknowledged; under chaos, every fault was injected and
    every board has had a message acknowledged since the last one (it recovered)."""
    if not all(len(set(s.acked)) >= messages for s in stats):
        return False
    if chaos is None:
        return True
    return chaos.budget == 0 and all(
        len(s.acked) > n for s, n in zip(stats, after_chaos, strict=True)
    )


def prewarm_board_runtime(runtime):
    """Prepare the virtual board's compiled shims once, before boards start in parallel."""
    if runtime != "micropython":
        return
    from host_tools.emulator import board

    warm = getattr(board, "vm_shims", None)  # the emulator caches it; first use compiles
    if warm is not None:
        warm()


def _tally(items):
    out = {}
    for k in items:
        out[k] = out.get(k, 0) + 1
    return out


def _inject(ch, boards, plat, progress):
    kind, i = ch.pick(len(boards))
    progress.extra = f"  chaos: {kind}" + (f" board {i}" if i is not None else "")
    if kind == "wifi_drop":
        boards[i].wifi(False)
        threading.Timer(1.5, boards[i].wifi, args=(True,)).start()
    elif kind == "power_cut":
        boards[i].power_cut(off=0.5)  # the board boots again by itself half a second later
    elif kind == "platform_restart":
        plat.stop()
        time.sleep(0.5)
        plat.start()


def format_summary(s):
    b = s["boot_to_first_ack_ms"]
    lines = [
        f"devices {s['devices']} ({s['runtime']}, seed {s['seed']}), "
        f"registered {s['registered']}, "
        f"online {s['online']}, acked {s['acked']} in {s['seconds']} s",
        f"registrations/s {s['registrations_per_s']}  messages/s {s['messages_per_s']}",
        f"boot to first ack ms: p50 {b['p50']}  p95 {b['p95']}  p99 {b['p99']}",
        f"messages lost: {s['messages_lost']} (stored {s['stored']}, "
        f"duplicates {s['duplicates']})",
    ]
    if s.get("chaos"):
        lines.append("chaos: " + ", ".join(f"{k} x{v}" for k, v in s["chaos"].items()))
    if s["errors"]:
        lines.append("errors by cause:")
        lines += [f"  {v:5d}  {k}" for k, v in s["errors"].items()]
    else:
        lines.append("errors: none")
    return "\n".join(lines)


def configure(parser, name):
    parser.add_argument("--devices", type=int, required=True, help="number of virtual boards")
    parser.add_argument(
        "--messages",
        type=int,
        default=5,
        help="telemetry messages per board (default: %(default)s)",
    )
    parser.add_argument(
        "--interval", type=int, default=1, help="telemetry interval in s (default: %(default)s)"
    )
    parser.add_argument(
        "--runtime",
        choices=["cpython", "micropython"],
        default="cpython",
        help="cpython: many boards in one process; micropython: one VM per board "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--app",
        metavar="DIR",
        help="your application folder (main.py, drivers, files) instead of the example main.py",
    )
    parser.add_argument(
        "--platform", metavar="STATE_DIR", help="platform state folder (default: a fresh one)"
    )
    parser.add_argument("--chaos", action="store_true", help="sprinkle bounded faults")
    parser.add_argument(
        "--heap",
        default=DEFAULT_HEAP,
        help="GC heap of each MicroPython board (-X heapsize; default: %(default)s)",
    )
    parser.add_argument(
        "--seed", type=int, help="MACs and the chaos schedule derive from it (default: random)"
    )
    parser.add_argument("--timeout", type=float, help="give up after this many seconds")
    parser.add_argument("--json", metavar="FILE", help="also write the summary as JSON")
    parser.set_defaults(handler=_run)


def _run(args):
    summary = run_fleet(
        args.devices,
        args.messages,
        args.interval,
        args.runtime,
        args.platform,
        args.chaos,
        args.timeout,
        args.seed,
        heap=args.heap,
        app=args.app,
    )
    print(format_summary(summary))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
    if summary["messages_lost"]:
        raise ZeroburnError(f"{summary['messages_lost']} acknowledged messages were lost")
    if not summary["complete"]:
        raise ZeroburnError("not every board got all its messages acknowledged in time")
    return 0

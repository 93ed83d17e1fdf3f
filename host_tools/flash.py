# `zeroburn flash|info|install-micropython|repl`: put the firmware on a board (or a virtual
# board's pty) with mpremote, check what a board holds, write MicroPython itself with esptool.
#
# mpremote is used as a library (its SerialTransport), not as a subprocess: one connection
# serves the whole flash (each `mpremote` run would interrupt and soft-reset the board again),
# files are hashed on the board in one round trip, the progress bar gets byte counts, and the
# console is followed on the same port after the reset. mpremote is pinned (==1.29.0) and only
# this module's BoardLink touches its API.
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from host_tools import boards, paths
from host_tools.errors import ZeroburnError

# The firmware loads .mpy version 6 (MicroPython 1.19+) and needs MicroPython 1.22+.
MPY_VERSION = 6
MIN_MICROPYTHON = (1, 22)
# Folders the firmware owns on a board: files there that the build does not produce are stale
# (an old module would still be importable, a .py shadows the .mpy of the same name).
OWNED_DIRS = ("zeroburn", "umqtt")
# While copying, the firmware's watchdog (which cannot be stopped, and on an ESP32 survives a
# soft reset) is re-armed this long; the reset at the end of the flash clears it.
COPY_WDT_MS = 30 * 60 * 1000
CHUNK = 512
ESP_IMAGE_MAGIC = 0xE9
DEFAULT_BAUD = 460800
CHIP_NAMES = {
    0: "ESP32",
    2: "ESP32-S2",
    5: "ESP32-C3",
    9: "ESP32-S3",
    12: "ESP32-C2",
    13: "ESP32-C6",
}


def configure(parser, name):
    {
        "flash": _configure_flash,
        "info": _configure_info,
        "install-micropython": _configure_install,
        "repl": _configure_repl,
    }[name](parser)


def _device_arg(p):
    p.add_argument(
        "--device",
        required=True,
        metavar="PORT",
        help="serial port (/dev/ttyUSB0, COM3), a virtual board's pty, or socket://HOST:PORT",
    )


def _configure_flash(p):
    _device_arg(p)
    p.add_argument("--board", required=True, help=f"board name ({', '.join(boards.names())})")
    p.add_argument("--config", required=True, metavar="FILE", help="device config.json")
    p.add_argument(
        "--ca",
        metavar="FILE",
        help="PEM bundle to put on the board as ca.pem (default: Aliyun's roots)",
    )
    creds = p.add_mutually_exclusive_group()
    creds.add_argument(
        "--keep-credentials",
        dest="wipe",
        action="store_false",
        help="leave a stored device token alone (default)",
    )
    creds.add_argument(
        "--wipe-credentials",
        dest="wipe",
        action="store_true",
        help="erase the stored token: the board registers again (uses an activation slot)",
    )
    p.set_defaults(wipe=False)
    p.add_argument(
        "--timeout",
        type=float,
        default=120,
        metavar="S",
        help="seconds to wait for registration and the first acknowledged telemetry",
    )
    p.add_argument(
        "--no-follow",
        action="store_true",
        help="reset the board and return without waiting for it to come online",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    p.add_argument("-q", "--quiet", action="store_true", help="no board console on stderr")
    p.set_defaults(handler=_flash)


def _configure_info(p):
    _device_arg(p)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(handler=_info)


def _configure_install(p):
    _device_arg(p)
    p.add_argument("--board", required=True, help=f"board name ({', '.join(boards.names())})")
    p.add_argument(
        "--firmware", required=True, metavar="FILE.bin", help="MicroPython image for the board"
    )
    p.add_argument("--baud", type=int, default=DEFAULT_BAUD, help="esptool baud rate")
    p.add_argument("--no-erase", action="store_true", help="skip erasing the whole flash first")
    p.add_argument(
        "--dry-run", action="store_true", help="print the esptool commands, run nothing"
    )
    p.set_defaults(handler=_install)


def _configure_repl(p):
    _device_arg(p)
    p.set_defaults(handler=_repl)


# ---- pure pieces (tested without a board) ---------------------------------------------------


def check_image(board, data, name="image"):
    """Refuse an image that is not an ESP image for this board's chip (ValueError)."""
    if board.virtual:
        raise ValueError(
            f"board {board.name} is virtual: MicroPython is part of it, nothing to install"
        )
    if len(data) < 24 or data[0] != ESP_IMAGE_MAGIC:
        raise ValueError(
            f"{name} is not an ESP firmware image (no 0xE9 header): download the .bin of "
            f"{board.micropython_build} from micropython.org/download"
        )
    chip_id = data[12] | data[13] << 8
    if chip_id != board.image_chip_id:
        have = CHIP_NAMES.get(chip_id, f"chip id {chip_id}")
        raise ValueError(
            f"{name} is built for {have}, but board {board.name} has an {board.chip}: "
            f"use the {board.micropython_build} image"
        )


def esptool_commands(board, port, firmware, baud=DEFAULT_BAUD, erase=True):
    """esptool argument lists (run as `python -m esptool ARGS`): erase, then write the image
    at the board's offset."""
    if board.virtual:
        raise ValueError(f"board {board.name} is virtual: there is no esptool step")
    base = ["--chip", board.chip, "--port", str(port), "--baud", str(baud)]
    cmds = [base + ["erase-flash"]] if erase else []
    cmds.append(base + ["write-flash", "-z", hex(board.flash_offset), str(firmware)])
    return cmds


def board_config(config, board):
    """What goes into the board's config.json: comment keys dropped (RAM on the board), and the
    board's safe-mode button filled in where the config leaves safe_mode_pin empty."""
    out = {k: v for k, v in config.items() if not k.startswith("_")}
    if out.get("safe_mode_pin") is None:
        out.pop("safe_mode_pin", None)
        if board.safe_mode_pin is not None:
            out["safe_mode_pin"] = board.safe_mode_pin
    boards.check_config(out, board)
    return out


def plan_copy(staged, on_board):
    """(paths to copy, paths already identical) from {path: sha256} staged and on the board."""
    copy = sorted(p for p, digest in staged.items() if on_board.get(p) != digest)
    same = sorted(p for p in staged if p not in copy)
    return copy, same


def stale_files(staged, board_files):
    """Files in the firmware's own folders on the board that this build does not produce."""
    return sorted(f for f in board_files if f.split("/", 1)[0] in OWNED_DIRS and f not in staged)


def check_runtime(facts, board):
    """Refuse a board whose MicroPython cannot run this build (ZeroburnError)."""
    if facts.get("impl") != "micropython":
        raise ZeroburnError(
            f"the board runs {facts.get('impl')}, not MicroPython; the flash writes .mpy files "
            "(a virtual board: serve it with --runtime micropython)"
        )
    ver = tuple(facts.get("ver") or ())
    if facts.get("mpy") != MPY_VERSION or ver[:2] < MIN_MICROPYTHON:
        shown = ".".join(map(str, ver)) or "unknown"
        raise ZeroburnError(
            f"the board runs MicroPython {shown} (.mpy v{facts.get('mpy')}); zeroburn needs "
            f"{'.'.join(map(str, MIN_MICROPYTHON))} or newer: "
            "`zeroburn install-micropython --device PORT --board NAME --firmware FILE.bin`"
        )
    machine = facts.get("machine") or ""
    if not board.virtual and " with " in machine:
        chip = machine.rsplit(" with ", 1)[1].strip().replace("-", "").lower()
        if chip.startswith("esp") and chip != board.chip:
            raise ZeroburnError(
                f"the board says it is {machine!r}, not an {board.chip}: "
                f"pick the right --board ({', '.join(boards.names())})"
            )


class Console:
    """Follows the board's console lines until registration and the first acknowledged
    telemetry, or a failure. Markers agreed with the firmware (firmware/zeroburn/__init__.py)."""

    REGISTERED = re.compile(r"\[reg\] registered as (\S+)")
    LOADED = re.compile(r"\[cred\] token loaded for (\S+)")
    ONLINE = re.compile(r"\[mqtt\] online as (\S+)")
    ACKED = re.compile(r"\[tel\] acked #(\d+)")
    ERROR = re.compile(r"\[(\w+)\] E: (.*)")
    WARNING = re.compile(r"\[(\w+)\] W: (.*)")

    def __init__(self):
        self.registered = None
        self.token_loaded = None
        self.online = None
        self.acked = None
        self.failure = None
        self.last_warning = None
        self.traceback = None

    @property
    def done(self):
        return self.acked is not None or self.failure is not None

    @property
    def stage(self):
        if self.acked is not None:
            return "telemetry"
        if self.online:
            return "online"
        if self.registered or self.token_loaded:
            return "registered"
        return "booting"

    def feed(self, line):
        line = line.strip()
        if self.traceback is not None:
            self.traceback.append(line)
            if line and not line.startswith(("File ", "Traceback")) and not line[0].isspace():
                self.failure = "the firmware crashed: " + line
            return
        if line.startswith("Traceback (most recent call last)"):
            self.traceback = [line]
        elif m := self.REGISTERED.search(line):
            self.registered = m.group(1)
        elif m := self.LOADED.search(line):
            self.token_loaded = m.group(1)
        elif m := self.ONLINE.search(line):
            self.online = m.group(1)
        elif m := self.ACKED.search(line):
            self.acked = int(m.group(1))
        elif line.startswith("[boot] safe mode"):
            self.failure = (
                f"the board is in safe mode ({line.split('(', 1)[-1].rstrip(')')}): remove the "
                "file with `mpremote connect PORT rm :safemode`, or release the button"
            )
        elif m := self.ERROR.search(line):
            self.failure = f"{m.group(1)}: {m.group(2)}"
        elif m := self.WARNING.search(line):
            phase, text = m.groups()
            if phase == "reg" and ("refused, CONNACK 4" in text or "reply rejected" in text):
                # the firmware now waits minutes before trying again: no point following
                self.failure = (
                    f"registration failed ({text}): check product_key/product_secret, that "
                    "dynamic registration is on for the product, and that this deviceName has "
                    "activation slots left"
                )
            else:
                self.last_warning = f"{phase}: {text}"


class Progress:
    """A one-line progress bar on stderr (plain lines when stderr is not a terminal)."""

    STEPS = (
        "check",
        "build",
        "connect",
        "compare",
        "copy",
        "verify",
        "reset",
        "registered",
        "online",
        "telemetry",
    )

    def __init__(self, stream=None, enabled=True, steps=STEPS):
        self.stream = stream or sys.stderr
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.enabled = enabled
        self.steps = steps
        self.shown = None
        self.drawn = False

    def update(self, step, fraction=1.0, detail=""):
        if not self.enabled:
            return
        done = (self.steps.index(step) + fraction) / len(self.steps)
        if self.tty:
            bar = "#" * int(done * 30)
            self.stream.write(f"\r[{bar:<30}] {done * 100:3.0f}% {step} {detail}"[:99] + "\x1b[K")
            self.stream.flush()
            self.drawn = True
        elif (step, detail) != (self.shown or (None, None))[:2]:
            self.stream.write(f"flash: {step} {detail}".rstrip() + "\n")
            self.stream.flush()
        self.shown = (step, detail, fraction)

    def say(self, text):
        """A line above the bar (board console, warnings); the bar is drawn again below it."""
        if self.drawn:
            self.stream.write("\r\x1b[K")
        self.stream.write(text + "\n")
        self.stream.flush()
        if self.drawn and self.shown:
            step, detail, fraction = self.shown
            self.update(step, fraction, detail)

    def end(self):
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False


# ---- the board link: mpremote's SerialTransport ----------------------------------------------

_FACTS = """\
import sys, os, json, binascii
r = {"impl": sys.implementation.name, "ver": list(sys.implementation.version[:3]),
     "mpy": getattr(sys.implementation, "_mpy", 0) & 0xff,
     "machine": getattr(sys.implementation, "_machine", "")}
try:
    import machine
    r["uid"] = binascii.hexlify(machine.unique_id()).decode()
except Exception:
    r["uid"] = None
print(json.dumps(r))
"""

_HASHES = """\
import os, json, hashlib, binascii
def _h(p):
    try:
        f = open(p, "rb")
    except OSError:
        return None
    d = hashlib.sha256()
    b = bytearray(512)
    m = memoryview(b)
    while True:
        n = f.readinto(b)
        if not n:
            break
        d.update(m[:n])
    f.close()
    return binascii.hexlify(d.digest()).decode()
def _walk(top, out):
    try:
        entries = list(os.ilistdir(top))
    except OSError:
        return
    for e in entries:
        p = top + "/" + e[0]
        if e[1] & 0x4000:
            _walk(p, out)
        else:
            out.append(p)
_files = []
for _d in %(dirs)r:
    _walk(_d, _files)
print(json.dumps({"hashes": {p: _h(p) for p in %(paths)r}, "files": _files}))
"""

# The board-side view of its credentials: the firmware's own record code and store, so the
# format lives in one place. Only booleans, names and the count leave the board, never a token.
_CREDS = """\
import json
from zeroburn import creds, hw
_s = creds.Store(hw.Hardware().nvs())
_rec = _s.load()
_out = {"has": _rec is not None, "regs": _s.regs,
        "pk": _rec["pk"] if _rec else None, "dn": _rec["dn"] if _rec else None}
if %(wipe)r:
    _s.wipe()
    _out["wiped"] = True
print(json.dumps(_out))
"""

_INFO = """\
import os, json
r = {}
try:
    import zeroburn
    r["fw"] = zeroburn.VERSION
except Exception:
    r["fw"] = None
try:
    with open("config.json") as f:
        c = json.loads(f.read())
    r["cfg"] = {"product_key": c.get("product_key"),
                "device_name_prefix": c.get("device_name_prefix") or ""}
    del c
except Exception:
    r["cfg"] = None
try:
    os.stat("safemode")
    r["safemode"] = True
except OSError:
    r["safemode"] = False
print(json.dumps(r))
"""


class BoardLink:
    """One mpremote connection to a board (or a virtual board's pty)."""

    def __init__(self, device, connect_timeout=15):
        self.device = device
        self.connect_timeout = connect_timeout
        self.t = None

    def open(self, reopen=False):
        from mpremote.transport import TransportError
        from mpremote.transport_serial import SerialTransport

        posix_path = sys.platform != "win32" and "://" not in self.device
        if not reopen and posix_path and not Path(self.device).exists():
            raise ZeroburnError(f"{self.device} does not exist: is the board plugged in?")
        deadline = time.monotonic() + self.connect_timeout
        while True:
            try:
                self.t = SerialTransport(self.device, baudrate=115200)
                return self
            except TransportError as e:
                # a board on native USB disappears for a moment when it resets
                if time.monotonic() > deadline:
                    raise ZeroburnError(f"cannot open {self.device}: {e}")
                time.sleep(0.3)

    def enter(self):
        """Interrupt whatever runs and get a fresh raw REPL (soft reset, as mpremote does)."""
        from mpremote.transport import TransportError

        try:
            self.t.enter_raw_repl(soft_reset=True, timeout_overall=self.connect_timeout)
        except TransportError as e:
            raise ZeroburnError(
                f"{self.device} does not answer like a MicroPython board ({e}): is MicroPython "
                "installed (`zeroburn install-micropython`) and no other program using the port?"
            )
        return self

    def __enter__(self):
        return self.open().enter()

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if self.t is not None:
            try:
                if self.t.in_raw_repl:
                    self.t.exit_raw_repl()
                self.t.close()
            except OSError:
                pass
            self.t = None

    def exec(self, code):
        from mpremote.transport import TransportError, TransportExecError

        try:
            return self.t.exec(code).decode()
        except TransportExecError as e:
            raise ZeroburnError(f"the board refused a command: {e.error_output.strip()}")
        except TransportError as e:
            raise ZeroburnError(f"lost the board on {self.device}: {e}")

    def json(self, code):
        out = self.exec(code)
        try:
            return json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise ZeroburnError(f"unexpected answer from the board: {out[-200:]!r}")

    def facts(self):
        return self.json(_FACTS)

    def hashes(self, paths_, dirs=OWNED_DIRS):
        return self.json(_HASHES % {"paths": list(paths_), "dirs": list(dirs)})

    def creds(self, wipe=False):
        return self.json(_CREDS % {"wipe": bool(wipe)})

    def info(self):
        return self.json(_INFO)

    def mkdirs(self, dirs):
        if dirs:
            self.exec(
                "import os\nfor d in %r:\n try:\n  os.mkdir(d)\n except OSError:\n  pass\n"
                % sorted(dirs)
            )

    def write(self, path, data, progress=None):
        """Write to a temporary name and rename over the old file: a cut mid-copy leaves the old
        file or the new one (littlefs renames atomically)."""
        tmp = path + ".zbnew"
        self.exec("f=open(%r,'wb')\nw=f.write" % tmp)
        for i in range(0, len(data), CHUNK):
            self.exec("w(%r)" % data[i : i + CHUNK])
            if progress:
                progress(min(i + CHUNK, len(data)))
        self.exec("f.close()\nimport os\nos.rename(%r,%r)" % (tmp, path))

    def remove(self, paths_):
        if paths_:
            self.exec(
                "import os\nfor p in %r:\n try:\n  os.remove(p)\n except OSError:\n  pass\n"
                % sorted(paths_)
            )

    def arm_watchdog(self):
        """Re-arm an ESP32 watchdog left running by the firmware with a long timeout (a new
        WDT reconfigures the running one); the reset at the end clears it."""
        self.exec("import machine\nmachine.WDT(timeout=%d).feed()" % COPY_WDT_MS)

    def reset(self):
        """machine.reset() without waiting for an answer (the board goes away)."""
        from mpremote.transport import TransportError

        try:
            self.t.exec_raw_no_follow("import machine\nmachine.reset()")
        except (TransportError, OSError):
            pass  # the reset may cut the line before the acknowledgement arrives
        self.t.in_raw_repl = False

    def lines(self, deadline):
        """Console lines until the deadline; reopens the port if the board's USB re-enumerated."""
        import serial

        buf = b""
        while time.monotonic() < deadline:
            try:
                self.t.serial.timeout = 0.2
                chunk = self.t.serial.read(256)
            except (serial.SerialException, OSError):
                self.close()
                self.connect_timeout = max(1, deadline - time.monotonic())
                try:
                    self.open(reopen=True)
                except ZeroburnError:
                    return
                continue
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                yield line.decode("utf-8", "replace").rstrip("\r")
        if buf:
            yield buf.decode("utf-8", "replace")


# ---- flash ----------------------------------------------------------------------------------


def _firmware_module(name):
    fw = str(paths.FIRMWARE)
    if fw not in sys.path:
        sys.path.insert(0, fw)
    import importlib

    return importlib.import_module(f"zeroburn.{name}")


def device_name(uid_hex, prefix=""):
    """The deviceName the firmware registers as: the firmware's own rule (sign.device_name)."""
    return _firmware_module("sign").device_name(bytes.fromhex(uid_hex), prefix or "")


def _ca_text(path, progress):
    from host_tools import cabundle

    if path is None:
        text, origin = cabundle.aliyun_bundle(), "Aliyun roots (from aliyun-iot-linkkit)"
    else:
        try:
            text, origin = Path(path).read_text(), str(path)
        except OSError as e:
            raise ZeroburnError(f"cannot read the CA bundle {path}: {e.strerror}")
    try:
        certs, warnings = cabundle.check_bundle(text, origin)
    except ValueError as e:
        raise ZeroburnError(str(e))
    for w in warnings:
        progress.say(f"zeroburn: warning: {w}")
    return (text if path is None else cabundle.to_pem(certs)), origin


def prepare(board_name, config_path, ca_path=None, progress=None):
    """Everything checked and staged before the board is touched: (board, config dict,
    {path: bytes}, {path: sha256}, CA origin). Raises ZeroburnError; writes nothing outside a
    temporary folder, which is gone when this returns (it held the product secret)."""
    from host_tools import build, config_cmd

    progress = progress or Progress(enabled=False)
    board = boards.load(board_name)
    try:
        d, _cfg, _sources = config_cmd.load(config_path)
        d = board_config(d, board)
        config_cmd.schema().parse(d)
    except ValueError as e:
        raise ZeroburnError(str(e))
    ca, origin = _ca_text(ca_path, progress)
    progress.update("build")
    with tempfile.TemporaryDirectory(prefix="zeroburn-stage-") as tmp:
        hashes = build.stage(tmp, board=board.name, config=d, ca_pem=ca, runtime="micropython")
        files = {rel: (Path(tmp) / rel).read_bytes() for rel in hashes}
    return board, d, files, hashes, origin


def flash(
    device,
    board_name,
    config_path,
    ca_path=None,
    wipe=False,
    timeout=120,
    follow=True,
    progress=None,
    console=None,
):
    """The whole flash; returns a result dict (see README). ZeroburnError on any failure."""
    progress = progress or Progress(enabled=False)
    progress.update("check")
    board, config, files, hashes, ca_origin = prepare(board_name, config_path, ca_path, progress)
    result = {"device": device, "board": board.name, "ca": ca_origin}
    progress.update("connect")
    link = BoardLink(device).open()
    try:
        link.enter()
        facts = link.facts()
        check_runtime(facts, board)
        if facts.get("uid"):
            result["device_name"] = device_name(facts["uid"], config.get("device_name_prefix"))
        if not board.virtual:
            link.arm_watchdog()
        progress.update("compare")
        seen = link.hashes(sorted(hashes))
        copy, same = plan_copy(hashes, seen["hashes"])
        stale = stale_files(hashes, seen["files"])
        total = sum(len(files[p]) for p in copy) or 1
        done = 0
        progress.update("copy", 0, f"{len(copy)} files")
        dirs = {str(Path(p).parent) for p in copy if "/" in p}
        link.mkdirs(dirs)
        for p in copy:
            base = done
            link.write(
                p,
                files[p],
                lambda n, base=base, p=p: progress.update("copy", (base + n) / total, p),
            )
            done += len(files[p])
        link.remove(stale)
        progress.update("verify")
        after = link.hashes(sorted(hashes))["hashes"]
        bad = [p for p in hashes if after.get(p) != hashes[p]]
        if bad:
            raise ZeroburnError(
                f"verification failed for {', '.join(bad)}: the board holds other bytes than "
                "were sent (full filesystem? run the flash again)"
            )
        result.update(
            copied=copy,
            unchanged=same,
            removed=stale,
            bytes_copied=sum(len(files[p]) for p in copy),
            verified=len(hashes),
        )
        if wipe:
            state = link.creds(wipe=True)
            result["credentials_wiped"] = state["has"]
            if state["has"]:
                progress.say(
                    "zeroburn: warning: stored token erased; the board registers again, which "
                    "uses one of Aliyun's 5 activation slots for its deviceName"
                )
        progress.update("reset")
        link.reset()
        if not follow:
            return result
        watch = Console()
        deadline = time.monotonic() + timeout
        for line in link.lines(deadline):
            if console:
                console(line)
            watch.feed(line)
            progress.update(watch.stage if watch.stage != "booting" else "reset")
            if watch.done:
                break
        result.update(
            registered=watch.registered,
            token_loaded=watch.token_loaded,
            online=watch.online,
            acked=watch.acked,
        )
        if watch.failure:
            raise ZeroburnError(f"the board reports a failure: {watch.failure}")
        if watch.acked is None:
            reached = {
                "booting": "it never registered nor loaded a token",
                "registered": "it has credentials but never came online",
                "online": "it is online but no telemetry was acknowledged",
            }[watch.stage]
            hint = f"; last warning: {watch.last_warning}" if watch.last_warning else ""
            raise ZeroburnError(
                f"files copied and verified, but after {timeout:g} s {reached}{hint}"
            )
        return result
    finally:
        link.close()


def _flash(args):
    progress = Progress()
    console = None if args.quiet else (lambda line: progress.say(f"board| {line}"))
    try:
        result = flash(
            args.device,
            args.board,
            args.config,
            ca_path=args.ca,
            wipe=args.wipe,
            timeout=args.timeout,
            follow=not args.no_follow,
            progress=progress,
            console=console,
        )
    finally:
        progress.end()
    if args.json:
        print(json.dumps(result))
        return 0
    n, m = len(result["copied"]), len(result["unchanged"])
    print(
        f"{args.device}: {n} file(s) copied ({result['bytes_copied']} bytes), {m} unchanged, "
        f"{result['verified']} verified by sha256"
    )
    if result.get("acked") is not None:
        how = "registered" if result.get("registered") else "logged in with its stored token"
        print(
            f"{result.get('device_name')}: {how}, online, telemetry #{result['acked']} "
            "acknowledged"
        )
    return 0


# ---- info -----------------------------------------------------------------------------------


def info(device):
    """What the board holds; never its token."""
    with BoardLink(device) as link:
        facts = link.facts()
        out = {"device": device, **facts}
        out.update(link.info())
        prefix = (out.get("cfg") or {}).get("device_name_prefix", "")
        if facts.get("uid"):
            try:
                out["device_name"] = device_name(facts["uid"], prefix)
            except ValueError as e:
                out["device_name"] = None
                out["device_name_error"] = str(e)
        out["credentials"] = link.creds() if out.get("fw") else None
    return out


def _info(args):
    r = info(args.device)
    if args.json:
        print(json.dumps(r))
        return 0
    ver = ".".join(map(str, r.get("ver") or [])) or "?"
    rows = [
        ("device", r["device"]),
        ("micropython", f"{ver} (.mpy v{r.get('mpy')}) {r.get('machine') or ''}".strip()),
        ("unique id", r.get("uid") or "unknown"),
        ("deviceName", r.get("device_name") or r.get("device_name_error") or "unknown"),
        ("firmware", f"zeroburn {r['fw']}" if r.get("fw") else "not installed"),
    ]
    cfg = r.get("cfg")
    rows.append(("config", f"product {cfg['product_key']}" if cfg else "none on the board"))
    c = r.get("credentials")
    if c is None:
        rows.append(("credentials", "unknown (no firmware)"))
    else:
        if c["has"]:
            held = f"token stored for {c['dn']} (product {c['pk']}), not shown"
            if cfg and (c["pk"], c["dn"]) != (cfg["product_key"], r.get("device_name")):
                held += "; it does not match the config: the board will register again"
        else:
            held = "none: the board will register at its next boot"
        rows.append(("credentials", held))
        rows.append(("registrations", str(c["regs"])))
    if r.get("safemode"):
        rows.append(("safe mode", "on (file 'safemode'): the application does not start"))
    for k, v in rows:
        print(f"{k:<14}{v}")
    return 0


# ---- install-micropython --------------------------------------------------------------------


def _install(args):
    board = boards.load(args.board)
    fw = Path(args.firmware)
    try:
        data = fw.read_bytes()
    except OSError as e:
        raise ZeroburnError(f"cannot read {fw}: {e.strerror}")
    try:
        check_image(board, data, fw.name)
        cmds = esptool_commands(board, args.device, fw, args.baud, erase=not args.no_erase)
    except ValueError as e:
        raise ZeroburnError(str(e))
    for cmd in cmds:
        print("esptool " + " ".join(cmd), flush=True)
        if args.dry_run:
            continue
        rc = subprocess.run([sys.executable, "-m", "esptool", *cmd]).returncode
        if rc != 0:
            raise ZeroburnError(
                f"esptool failed (exit {rc}); hold BOOT and press EN/RST to enter the "
                "bootloader, then try again"
            )
    if not args.dry_run:
        print(f"MicroPython written at {hex(board.flash_offset)}; next: zeroburn flash")
    return 0


# ---- repl -----------------------------------------------------------------------------------


def _repl(args):
    """mpremote's own REPL (Ctrl-] or Ctrl-X leaves it)."""
    if sys.platform != "win32" and "://" not in args.device and not Path(args.device).exists():
        raise ZeroburnError(f"{args.device} does not exist: is the board plugged in?")
    return subprocess.run(
        [sys.executable, "-m", "mpremote", "connect", args.device, "repl"]
    ).returncode

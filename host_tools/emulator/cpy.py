# The CPython runtime of a virtual board: the firmware runs in a thread of this process, in its
# own module namespace (its own __import__, open and print), on top of the same shims the
# MicroPython VM uses plus CPython stand-ins for what MicroPython has built in.
import binascii
import builtins
import calendar
import errno
import hashlib
import io
import json
import os
import posixpath
import queue
import select as _select
import socket as _socket
import ssl as _ssl
import struct
import sys
import threading
import time as _time
import traceback
import types
from typing import Any

from host_tools.emulator.base import SHIMS, PowerCut

# modules a board imports from the shims folder (shared with the MicroPython VM)
SHIM_MODULES = ("machine", "network", "esp32", "ntptime", "time", "os", "socket", "zbfs")
# u-names of MicroPython: the same module as the plain name on a board
ALIASES = {
    "utime": None,  # the CPython base under the time shim (see _base_utime)
    "usocket": None,
    "uos": None,
    "umachine": None,
    "ujson": "json",
    "ustruct": "struct",
    "ubinascii": "binascii",
    "uhashlib": "hashlib",
    "uerrno": "errno",
    "uio": "io",
    "uselect": "select",
    "urandom": "random",
    "uctypes": None,
}


def _json():
    """CPython's json, taking any buffer as MicroPython's does (json.loads(memoryview))."""
    m = types.ModuleType("json")
    m.__dict__.update({k: getattr(json, k) for k in ("dumps", "dump", "load", "JSONDecodeError")})

    def loads(s, *args, **kwargs):
        if isinstance(s, (memoryview, bytearray)):
            s = bytes(s)
        return json.loads(s, *args, **kwargs)

    m.__dict__["loads"] = loads
    return m


# stateless CPython modules a board may import as they are
PASSTHROUGH = {
    "json": _json(),
    "struct": struct,
    "binascii": binascii,
    "hashlib": hashlib,
    "errno": errno,
    "io": io,
}
PASSTHROUGH_NAMES = ("random", "math", "re", "collections", "array", "heapq", "hmac")
HERE_MARK = "host_tools/emulator/"
TICKS_PERIOD = 1 << 30  # MicroPython's ticks wrap here
_T0 = _time.monotonic()


class CpyCore:
    """One board in a thread; the same interface as board.VmCore."""

    def __init__(self, board, gen):
        self.board = board
        self.gen = gen
        self.killed = False
        self.interrupted = False
        self.cmds = queue.Queue()
        self.modules = {}
        self.root = str(board.flash)  # the board's "/" (its littlefs)
        self.cwd = "/"  # a board path
        self.thread = None

    # ---- the interface the board uses ----------------------------------------------------
    def start(self):
        self.builtins = self._make_builtins()
        self.main = {"__name__": "__main__", "__builtins__": self.builtins}
        self.thread = threading.Thread(
            target=self._run, name=f"{self.board.name}-cpy", daemon=True
        )
        self.thread.start()

    def command(self, kind, data):
        self.cmds.put((kind, data))

    def stdin(self, data):
        pass  # no stdin consumer on the CPython runtime (mpremote mount needs the VM)

    def interrupt(self):
        self.interrupted = True

    def kill(self):
        self.killed = True
        self.cmds.put(None)  # wakes an idle board thread
        if self.thread is not None and threading.current_thread() is not self.thread:
            self.thread.join(5)
        return None

    # ---- blocking points -----------------------------------------------------------------
    def checkpoint(self, point=None):
        if self.killed:
            raise PowerCut()
        if self.interrupted:
            self.interrupted = False
            raise KeyboardInterrupt()
        if point is not None and self._ctl("cut_at") == point:
            self.board.event(self.gen, "cut " + point)
            while True:
                self.sleep(0.05)

    def sleep(self, seconds):
        end = _time.monotonic() + seconds
        while True:
            self.checkpoint()
            left = end - _time.monotonic()
            if left <= 0:
                return
            _time.sleep(min(left, 0.05))

    # ---- the thread ----------------------------------------------------------------------
    def _run(self):
        try:
            while True:
                item = self.cmds.get()
                self.checkpoint()
                if item is None:
                    continue
                kind, data = item
                status = self._command(kind, data)
                self.board.event(self.gen, f"done {status}")
        except PowerCut:
            pass
        except KeyboardInterrupt:
            self.board.event(self.gen, "done 1")
            self._run()

    def _command(self, kind, data):
        code = data.decode()
        if kind == "boot":
            self._run_file("boot.py")
            if data == b"1":
                self._run_file("main.py")
            return 0
        if kind == "raw":
            return self._exec(code, "<stdin>", "exec", "stderr")
        if kind == "single":
            return self._exec(code, "<stdin>", "single", "stdout")
        return self._exec(code, "<stdin>", "exec", "stdout")

    def _run_file(self, name):
        path = self.path(name)
        try:
            with open(path) as f:
                code = f.read()
        except OSError:
            return
        self._exec(code, name, "exec", "stdout")

    def _exec(self, code, name, mode, err):
        try:
            exec(compile(code, name, mode), self.main)
            return 0
        except PowerCut:
            raise
        except SystemExit:
            return 1
        except BaseException as e:  # noqa: B036  (the REPL reports and carries on)
            self._print_exception(e, err)
            return 1

    def _print_exception(self, e, stream):
        """MicroPython's traceback format; the emulator's own frames (built into the firmware
        on a board) left out, OSError spelled as MicroPython does (mpremote parses it)."""
        lines = ["Traceback (most recent call last):\n"]
        for frame in traceback.extract_tb(e.__traceback__)[1:]:
            if HERE_MARK in frame.filename:
                continue
            lines.append(f'  File "{frame.filename}", line {frame.lineno}, in {frame.name}\n')
        if isinstance(e, OSError) and e.errno is not None and e.errno in errno.errorcode:
            lines.append(f"OSError: [Errno {e.errno}] {errno.errorcode[e.errno]}\n")
        elif isinstance(e, OSError):
            lines.append(f"OSError: {e.args[0] if len(e.args) == 1 else e.args}\n")
        else:
            lines.append(f"{type(e).__name__}: {e}\n")
        self.board.output("".join(lines).encode(), stream)

    # ---- the board's namespace -----------------------------------------------------------
    def _ctl(self, name, default=None):
        try:
            with open(os.path.join(self.board.ctl, name)) as f:
                return f.read().strip()
        except OSError:
            return default

    def path(self, p):
        """Board path (absolute from the flash root, or relative to the board's cwd) -> host
        path inside the flash folder; nothing above the flash is reachable."""
        if isinstance(p, bytes):
            p = p.decode()
        board = posixpath.normpath(posixpath.join(self.cwd, p))
        if board.startswith("//"):
            board = board[1:]
        return self.root + ("" if board == "/" else board)

    def _make_builtins(self):
        b = dict(builtins.__dict__)
        b["__import__"] = self._import
        real_open = self._real_open
        b["open"] = real_open  # replaced by the littlefs wrapper once zbfs loads
        b["print"] = self._print
        b["input"] = None
        self.builtins = b
        zbfs = self._import("zbfs")
        b["open"] = zbfs.make_open(real_open)
        return b

    def _real_open(self, file, mode="r", *args, **kwargs):
        self.checkpoint()
        return open(
            self.path(file) if isinstance(file, (str, bytes)) else file, mode, *args, **kwargs
        )

    def _print(self, *args, sep=" ", end="\n", file=None):
        text = sep.join(str(a) for a in args) + end
        if file is not None and getattr(file, "_board_stream", None) is None:
            file.write(text)
            return
        stream = getattr(file, "_board_stream", "stdout")
        self.board.output(text.encode(), stream)

    def _import(self, name, globals=None, locals=None, fromlist=(), level=0):
        if level:
            raise ImportError("relative import is not supported on a board")
        top = self._load(name)
        if fromlist:
            mod = self.modules[name]
            for attr in fromlist:
                if attr != "*" and not hasattr(mod, attr):
                    sub = name + "." + attr
                    try:
                        self._load(sub)
                    except ImportError:
                        pass
            return mod
        return top

    def _load(self, name):
        """Load `name` (and its parents) into this board's modules; return the top package."""
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            full = ".".join(parts[:i])
            if full not in self.modules:
                self.modules[full] = self._find(full)
                if i > 1:
                    setattr(
                        self.modules[".".join(parts[: i - 1])], parts[i - 1], self.modules[full]
                    )
        return self.modules[parts[0]]

    def _find(self, name):
        if name in ALIASES:
            target = ALIASES[name]
            if target is not None:
                return self._load(target) and self.modules[target]
            return self._base(name)
        if name in PASSTHROUGH:
            return PASSTHROUGH[name]
        if name in PASSTHROUGH_NAMES:
            return __import__(name)
        if name == "zbboard":
            return self._zbboard()
        if name in ("gc", "micropython", "sys", "select", "ssl"):
            return getattr(self, "_mod_" + name)()
        if name in SHIM_MODULES:
            return self._exec_module(name, os.path.join(SHIMS, name + ".py"))
        # firmware and libraries: along the board's sys.path ('' then lib, and what the firmware
        # put first, e.g. an update's folder); a submodule only inside its package's folder
        parent, _, rel = name.rpartition(".")
        if parent:
            bases = getattr(self.modules[parent], "__path__", [])[:1]
        else:
            sys_mod = self.modules.get("sys")
            entries = sys_mod.path if sys_mod is not None else ["", "/lib"]
            bases = [self.path(e) for e in entries if e != ".frozen"]
        for base in bases:
            pkg = os.path.join(base, rel, "__init__.py")
            mod = os.path.join(base, rel + ".py")
            if os.path.exists(mod):
                return self._exec_module(name, mod)
            if os.path.exists(pkg):
                return self._exec_module(name, pkg, package=os.path.dirname(pkg))
            if os.path.isdir(os.path.join(base, rel)) and "." not in name:
                # a namespace package (umqtt/ without __init__), as MicroPython allows
                return self._new_module(name, package=os.path.join(base, rel))
        raise ImportError(f"no module named '{name}'")

    def _new_module(self, name, package=None) -> Any:  # a board's module: attributes set freely
        m = types.ModuleType(name)
        m.__dict__["__builtins__"] = self.builtins
        if package:
            m.__path__ = [package]
        return m

    def _exec_module(self, name, path, package=None):
        m = self._new_module(name, package)
        m.__file__ = path
        self.modules[name] = m  # before exec: import cycles see the partial module
        with open(path) as f:
            code = compile(
                f.read(),
                os.path.relpath(path, self.root) if path.startswith(self.root) else path,
                "exec",
            )
        try:
            exec(code, m.__dict__)
        except BaseException:
            del self.modules[name]
            raise
        return m

    # ---- CPython stand-ins for MicroPython built-ins -------------------------------------
    def _base(self, name):
        m = self._new_module(name)
        if name == "umachine" or name == "uctypes":
            return m
        fill = {"utime": _fill_utime, "usocket": _fill_usocket, "uos": _fill_uos}[name]
        fill(m, self)
        return m

    def _zbboard(self):
        core = self
        board = self.board
        m = self._new_module("zbboard")
        m.CTL = str(board.ctl)
        m.MAC = bytes(int(x, 16) for x in board.mac.split(":"))
        m.NVS_DIR = "/.nvs"
        m.ctl = core._ctl

        def set_ctl(name, value):
            tmp = os.path.join(board.ctl, "." + name + ".tmp")
            with open(tmp, "w" if isinstance(value, str) else "wb") as f:
                f.write(value)
            os.replace(tmp, os.path.join(board.ctl, name))

        def ctl_bytes(name):
            try:
                with open(os.path.join(board.ctl, name), "rb") as f:
                    return f.read()
            except OSError:
                return None

        def atomic_write(path, data):
            path = core.path(path)
            tmp = path + ".~new"
            core.checkpoint()
            with open(tmp, "wb") as f:
                f.write(data)
            core.checkpoint("nvs_entry")
            os.replace(tmp, path)

        m.set_ctl = set_ctl
        m.ctl_bytes = ctl_bytes
        m.atomic_write = atomic_write
        m.event = lambda line: board.event(core.gen, line)
        m.checkpoint = core.checkpoint
        m.host_time = _time.time
        m.sleep_ms = lambda ms: core.sleep(ms / 1000)
        m.ticks_ms = _ticks_ms
        m.ticks_diff = _ticks_diff
        m.proxy_port = board.link.ensure
        return m

    def _mod_gc(self):
        m = self._new_module("gc")
        m.collect = lambda: None
        m.enable = lambda: None
        m.disable = lambda: None
        m.isenabled = lambda: True
        heap = self.board.heap
        m.mem_free = lambda: heap // 2  # CPython has no GC heap to measure: a plausible figure
        m.mem_alloc = lambda: heap // 2
        m.threshold = lambda *a: -1
        return m

    def _mod_micropython(self):
        m = self._new_module("micropython")
        m.const = lambda x: x
        m.opt_level = lambda *a: 0
        m.mem_info = lambda *a: None
        m.qstr_info = lambda *a: None
        m.stack_use = lambda: 0
        m.heap_lock = lambda: 0
        m.heap_unlock = lambda: 0
        m.kbd_intr = lambda c: None
        m.alloc_emergency_exception_buf = lambda n: None
        m.schedule = lambda f, arg: f(arg)
        return m

    def _mod_sys(self):
        core = self
        m = self._new_module("sys")
        for attr in ("byteorder", "maxsize", "version", "version_info", "argv", "exit"):
            setattr(m, attr, getattr(sys, attr))
        m.platform = "esp32"
        m.implementation = types.SimpleNamespace(name="micropython", version=(1, 29, 0))
        m.modules = self.modules
        m.path = ["", ".frozen", "/lib"]

        class _Stream:
            def __init__(self, name):
                self._board_stream = name

            def write(self, s):
                core.board.output(
                    s.encode() if isinstance(s, str) else bytes(s), self._board_stream
                )
                return len(s)

        m.stdout = _Stream("stdout")
        m.stderr = _Stream("stderr")
        m.print_exception = lambda e, file=None: core._print_exception(
            e, getattr(file, "_board_stream", "stdout")
        )
        return m

    def _mod_select(self):
        core = self
        m = self._new_module("select")
        m.POLLIN, m.POLLOUT, m.POLLERR, m.POLLHUP = 1, 4, 8, 16

        class Poll:
            def __init__(self):
                self.objs = {}

            def register(self, obj, mask=5):
                self.objs[id(obj)] = (obj, mask)

            def modify(self, obj, mask):
                self.objs[id(obj)] = (obj, mask)

            def unregister(self, obj):
                self.objs.pop(id(obj), None)

            def poll(self, timeout=-1):
                """Ready objects, as MicroPython's poll (timeout in ms, -1 = forever)."""
                end = (
                    None if timeout is None or timeout < 0 else _time.monotonic() + timeout / 1000
                )
                while True:
                    core.checkpoint()
                    ready = []
                    rl, wl = [], []
                    for obj, mask in self.objs.values():
                        if mask & 1 and getattr(obj, "pending", lambda: 0)():
                            ready.append((obj, 1))
                        elif mask & 1:
                            rl.append(obj)
                        if mask & 4:
                            wl.append(obj)
                    if ready:
                        return ready
                    slice_s = 0.05 if end is None else max(0, min(0.05, end - _time.monotonic()))
                    try:
                        r, w, _ = _select.select(rl, wl, [], slice_s)
                    except (OSError, ValueError):
                        return [(obj, 8) for obj, _ in self.objs.values()]
                    ev = {}
                    for o in r:
                        ev[id(o)] = ev.get(id(o), 0) | 1
                    for o in w:
                        ev[id(o)] = ev.get(id(o), 0) | 4
                    if ev:
                        return [(self.objs[k][0], v) for k, v in ev.items()]
                    if end is not None and _time.monotonic() >= end:
                        return []

            def ipoll(self, timeout=-1, flags=0):
                return iter(self.poll(timeout))

        m.poll = Poll

        def select_fn(r, w, x, timeout=None):
            return _select.select(r, w, x, timeout)

        m.select = select_fn
        return m

    def _mod_ssl(self):
        core = self
        m = self._new_module("ssl")
        m.PROTOCOL_TLS_CLIENT = 0
        m.PROTOCOL_TLS_SERVER = 1
        m.CERT_NONE, m.CERT_OPTIONAL, m.CERT_REQUIRED = 0, 1, 2
        m.MBEDTLS_VERSION = "virtual (CPython ssl)"

        class SSLContext:
            def __init__(self, protocol=0):
                if protocol != 0:
                    raise ValueError("only PROTOCOL_TLS_CLIENT on a board")
                self.verify_mode = 0  # as MicroPython: a fresh context verifies nothing
                self._cadata = []

            def load_verify_locations(self, cafile=None, cadata=None):
                if cafile is not None:
                    raise ValueError("invalid cert")  # the VM rejects PEM files too (FACTS.md)
                if cadata is None:
                    raise TypeError("object with buffer protocol required")
                data = bytes(cadata)
                if data.startswith(b"-----BEGIN"):
                    raise ValueError("invalid cert")  # MicroPython's ssl takes DER only
                self._cadata.append(data)

            def load_cert_chain(self, certfile, keyfile):
                raise NotImplementedError

            def wrap_socket(
                self, sock, server_side=False, do_handshake_on_connect=True, server_hostname=None
            ):
                ctx = _ssl.SSLContext(_ssl.PROTOCOL_TLS_CLIENT)
                if self.verify_mode == 2:
                    ctx.verify_mode = _ssl.CERT_REQUIRED
                    ctx.check_hostname = server_hostname is not None
                    if not self._cadata:
                        raise OSError(-0x2700, "no CA loaded")
                    for der in self._cadata:
                        try:
                            ctx.load_verify_locations(cadata=der)
                        except _ssl.SSLError:
                            raise ValueError("invalid cert")
                else:
                    ctx.check_hostname = False
                    ctx.verify_mode = _ssl.CERT_NONE
                return _SSLSocket(core, ctx, sock, server_hostname, do_handshake_on_connect)

        m.SSLContext = SSLContext

        def wrap_socket(
            sock,
            server_side=False,
            key=None,
            cert=None,
            cert_reqs=0,
            cadata=None,
            server_hostname=None,
            do_handshake=True,
        ):
            ctx = SSLContext(0)
            ctx.verify_mode = cert_reqs
            if cadata:
                ctx.load_verify_locations(cadata=cadata)
            return ctx.wrap_socket(sock, server_hostname=server_hostname)

        m.wrap_socket = wrap_socket
        m.SSLError = OSError
        return m


# ---- utime ---------------------------------------------------------------------------------
def _ticks_ms():
    return int((_time.monotonic() - _T0) * 1000) % TICKS_PERIOD


def _ticks_us():
    return int((_time.monotonic() - _T0) * 1000000) % TICKS_PERIOD


def _ticks_add(t, delta):
    return (t + delta) % TICKS_PERIOD


def _ticks_diff(a, b):
    d = (a - b) % TICKS_PERIOD
    return d - TICKS_PERIOD if d >= TICKS_PERIOD // 2 else d


def _fill_utime(m, core):
    """The unix port's utime in CPython terms: 1970 epoch, 8-tuples, ticks that wrap."""

    def gmtime(secs=None):
        t = _time.gmtime(_time.time() if secs is None else secs)
        return (
            t.tm_year,
            t.tm_mon,
            t.tm_mday,
            t.tm_hour,
            t.tm_min,
            t.tm_sec,
            t.tm_wday,
            t.tm_yday,
        )

    def mktime(t):
        return calendar.timegm((t[0], t[1], t[2], t[3], t[4], t[5], 0, 0, 0))

    m.time = _time.time
    m.time_ns = _time.time_ns
    m.gmtime = gmtime
    m.localtime = gmtime
    m.mktime = mktime
    m.sleep = core.sleep
    m.sleep_ms = lambda ms: core.sleep(ms / 1000)
    m.sleep_us = lambda us: core.sleep(us / 1000000)
    m.ticks_ms = _ticks_ms
    m.ticks_us = _ticks_us
    m.ticks_cpu = _ticks_us
    m.ticks_add = _ticks_add
    m.ticks_diff = _ticks_diff


def _fill_uos(m, core):
    """The unix port's os with this board's flash folder as the file system root for relative
    names (the process-wide cwd is not the board's)."""
    p = core.path

    def ilistdir(path="."):
        for name in sorted(os.listdir(p(path))):
            full = os.path.join(p(path), name)
            kind = 0x4000 if os.path.isdir(full) else 0x8000
            yield (name, kind, 0)

    def stat(path):
        s = os.stat(p(path))
        return (
            s.st_mode,
            0,
            0,
            0,
            0,
            0,
            s.st_size,
            int(s.st_atime),
            int(s.st_mtime),
            int(s.st_ctime),
        )

    def chdir(path):
        if not os.path.isdir(p(path)):
            raise OSError(errno.ENOENT)
        core.cwd = posixpath.normpath(posixpath.join(core.cwd, path))

    def rename(a, b):
        core.checkpoint()
        os.replace(p(a), p(b))

    def remove(path):
        core.checkpoint()
        os.remove(p(path))

    m.sep = "/"
    m.ilistdir = ilistdir
    m.listdir = lambda path=".": [e[0] for e in ilistdir(path)]
    m.stat = stat
    m.statvfs = lambda path="/": (4096, 4096, 512, 400, 400, 0, 0, 0, 0, 255)
    m.mkdir = lambda path: os.mkdir(p(path))
    m.rmdir = lambda path: os.rmdir(p(path))
    m.remove = remove
    m.unlink = remove
    m.rename = rename
    m.getcwd = lambda: core.cwd
    m.chdir = chdir
    m.urandom = os.urandom
    m.uname = lambda: ("esp32", "esp32", "1.29.0", "virtual", "ESP32 module (virtual)")
    m.sync = lambda: None
    m.dupterm = lambda *a: None


def _fill_usocket(m, core):
    """usocket: CPython sockets with MicroPython's stream methods (read/write/readinto), every
    blocking wait cut into slices so a power cut or Ctrl-C unwinds it."""
    for name in (
        "AF_INET",
        "AF_INET6",
        "SOCK_STREAM",
        "SOCK_DGRAM",
        "SOCK_RAW",
        "IPPROTO_TCP",
        "IPPROTO_UDP",
        "SOL_SOCKET",
        "SO_REUSEADDR",
        "TCP_NODELAY",
        "IPPROTO_IP",
    ):
        setattr(m, name, getattr(_socket, name))

    def getaddrinfo(host, port, af=0, type=0, proto=0, flags=0):
        try:
            res = _socket.getaddrinfo(host, port, _socket.AF_INET, type or _socket.SOCK_STREAM)
        except _socket.gaierror:
            raise OSError(-202)
        return [(r[0], r[1], r[2], r[3], r[4]) for r in res]

    m.getaddrinfo = getaddrinfo
    m.socket = lambda af=_socket.AF_INET, type=_socket.SOCK_STREAM, proto=0: _Socket(
        core, _socket.socket(af, type, proto)
    )
    m.error = OSError
    m.timeout = OSError


def _oserror(e):
    if isinstance(e, _socket.timeout):
        return OSError(errno.ETIMEDOUT)
    if isinstance(e, OSError) and e.errno:
        return OSError(e.errno)
    return OSError(errno.EIO)


class _Socket:
    """A board's TCP socket (MicroPython semantics on top of a CPython socket)."""

    def __init__(self, core, sock):
        self.core = core
        self.s = sock
        self.s.setblocking(False)
        self.timeout = None  # None: blocking; 0: non-blocking; >0: seconds

    def fileno(self):
        return self.s.fileno()

    def pending(self):
        return 0

    def settimeout(self, t):
        self.timeout = t

    def setblocking(self, flag):
        self.timeout = None if flag else 0

    def setsockopt(self, *args):
        self.s.setsockopt(*args)

    def bind(self, addr):
        self.s.bind(addr)

    def listen(self, n=5):
        self.s.listen(n)

    def _wait(self, write, end):
        while True:
            self.core.checkpoint()
            left = None if end is None else end - _time.monotonic()
            if left is not None and left <= 0:
                raise OSError(errno.ETIMEDOUT)
            slice_s = 0.05 if left is None else min(0.05, left)
            r, w, _ = _select.select(
                [] if write else [self.s], [self.s] if write else [], [], slice_s
            )
            if r or w:
                return

    def _end(self):
        if self.timeout is None:
            return None
        return _time.monotonic() + self.timeout

    def connect(self, addr):
        end = self._end()
        err = self.s.connect_ex(addr)
        if err in (0,):
            return
        if err not in (errno.EINPROGRESS, errno.EWOULDBLOCK):
            raise OSError(err)
        if self.timeout == 0:
            raise OSError(errno.EINPROGRESS)
        self._wait(True, end)
        err = self.s.getsockopt(_socket.SOL_SOCKET, _socket.SO_ERROR)
        if err:
            raise OSError(err)

    def _recv(self, n):
        end = self._end()
        while True:
            self.core.checkpoint()
            try:
                return self.s.recv(n)
            except BlockingIOError:
                if self.timeout == 0:
                    return None
                self._wait(False, end)
            except OSError as e:
                raise _oserror(e)

    def recv(self, n):
        data = self._recv(n)
        if data is None:
            raise OSError(errno.EAGAIN)
        return data

    def read(self, n=-1):
        if n is None or n < 0:
            chunks = []
            while True:
                d = self._recv(4096)
                if not d:
                    return b"".join(chunks)
                chunks.append(d)
        return self._recv(n)

    def readinto(self, buf, n=None):
        n = len(buf) if n is None else n
        data = self._recv(n)
        if data is None:
            return None
        buf[: len(data)] = data
        return len(data)

    def readline(self):
        line = b""
        while not line.endswith(b"\n"):
            c = self._recv(1)
            if not c:
                break
            line += c
        return line

    def write(self, data, n=None):
        data = bytes(memoryview(data)[: len(data) if n is None else n])
        end = self._end()
        while True:
            self.core.checkpoint()
            try:
                return self.s.send(data)
            except BlockingIOError:
                if self.timeout == 0:
                    return None
                self._wait(True, end)
            except OSError as e:
                raise _oserror(e)

    def send(self, data):
        n = self.write(data)
        if n is None:
            raise OSError(errno.EAGAIN)
        return n

    def sendall(self, data):
        mv = memoryview(bytes(data))
        while mv:
            n = self.send(mv)
            mv = mv[n:]

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass

    def makefile(self, mode="rb", buffering=0):
        return self


class _SSLSocket:
    """MicroPython's SSL socket: read(n) gives None when non-blocking and nothing is decrypted
    yet (CPython raises SSLWantReadError), write/readinto/setblocking/close, pollable."""

    def __init__(self, core, ctx, sock, server_hostname, handshake=True):
        self.core = core
        self.blocking = sock.timeout != 0
        end = sock._end()
        try:
            # CPython detaches the plain socket: from here on only the SSL object has the fd
            self.s = ctx.wrap_socket(
                sock.s, server_hostname=server_hostname, do_handshake_on_connect=False
            )
        except ValueError as e:
            raise OSError(errno.EINVAL, str(e))
        sock.s = self.s
        # do_handshake_on_connect=False: the handshake runs inside the first read or write
        # (OpenSSL's, as mbedTLS's), non-blocking there when the socket is
        while handshake:
            core.checkpoint()
            try:
                self.s.do_handshake()
                break
            except _ssl.SSLWantReadError:
                # mbedTLS's blocking handshake waits up to the socket timeout for each read,
                # with no bound on the whole: a peer that trickles bytes keeps it going
                self._wait(False, end)
                end = sock._end()
            except _ssl.SSLWantWriteError:
                self._wait(True, end)
                end = sock._end()
            except _ssl.SSLCertVerificationError as e:
                # mbedTLS words it so; the firmware only sees an OSError
                raise OSError(-9984, f"MBEDTLS_ERR_X509_CERT_VERIFY_FAILED ({e.verify_message})")
            except _ssl.SSLError as e:
                raise OSError(-0x7780, f"MBEDTLS_ERR_SSL ({e.reason})")
            except OSError as e:
                raise _oserror(e)

    def _wait(self, write, end):
        while True:
            self.core.checkpoint()
            left = None if end is None else end - _time.monotonic()
            if left is not None and left <= 0:
                raise OSError(errno.ETIMEDOUT)
            slice_s = 0.05 if left is None else min(0.05, left)
            r, w, _ = _select.select(
                [] if write else [self.s], [self.s] if write else [], [], slice_s
            )
            if r or w:
                return

    def fileno(self):
        return self.s.fileno()

    def pending(self):
        return self.s.pending()

    def setblocking(self, flag):
        self.blocking = bool(flag)

    def settimeout(self, t):
        # MicroPython's SSL socket has no working settimeout (FACTS.md)
        self.blocking = t != 0

    def _io(self, fn, write, eof):
        while True:
            self.core.checkpoint()
            try:
                return fn()
            except (_ssl.SSLWantReadError, _ssl.SSLWantWriteError) as e:
                if not self.blocking:
                    return None
                self._wait(isinstance(e, _ssl.SSLWantWriteError) or write, None)
            except _ssl.SSLZeroReturnError:
                return eof  # the peer closed the session: b"" read, 0 written
            except _ssl.SSLCertVerificationError as e:  # a handshake inside the first write
                raise OSError(-9984, f"MBEDTLS_ERR_X509_CERT_VERIFY_FAILED ({e.verify_message})")
            except _ssl.SSLError as e:
                raise OSError(-0x7780, f"MBEDTLS_ERR_SSL ({e.reason})")
            except OSError as e:
                raise _oserror(e)

    def read(self, n=-1):
        if n is None or n < 0:
            n = 4096
        return self._io(lambda: self.s.recv(n), False, b"")

    def recv(self, n):
        d = self.read(n)
        if d is None:
            raise OSError(errno.EAGAIN)
        return d

    def readinto(self, buf, n=None):
        data = self.read(len(buf) if n is None else n)
        if data is None:
            return None
        buf[: len(data)] = data
        return len(data)

    def write(self, data, n=None):
        data = bytes(memoryview(data)[: len(data) if n is None else n])
        return self._io(lambda: self.s.send(data), True, 0)

    def send(self, data):
        n = self.write(data)
        if n is None:
            raise OSError(errno.EAGAIN)
        return n

    def sendall(self, data):
        mv = memoryview(bytes(data))
        while mv:
            n = self.send(mv)
            mv = mv[n:]

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass

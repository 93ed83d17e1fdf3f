# Test-only CPython runtime for firmware modules: MicroPython-API shims and an isolated importer.
# (The virtual board's shims in host_tools/emulator/ do this for whole boards; the firmware's
# unit and seam tests need only this much, and must not depend on a board to run.)
import builtins
import gc as _gc
import select as _select
import socket as _socket
import ssl as _ssl
import time as _time
import types
from pathlib import Path

from host_tools.paths import BUILD_LIB, FIRMWARE

HERE = Path(__file__).resolve().parent

_PERIOD = 1 << 30  # MicroPython's ticks period


def _time_module():
    m = types.ModuleType("time")
    for name in ("time", "time_ns", "gmtime", "localtime", "mktime", "sleep"):
        setattr(m, name, getattr(_time, name))
    m.ticks_ms = lambda: int(_time.monotonic() * 1000) % _PERIOD
    m.ticks_add = lambda t, d: (t + d) % _PERIOD

    def ticks_diff(a, b):
        d = (a - b) % _PERIOD
        return d - _PERIOD if d >= _PERIOD // 2 else d

    m.ticks_diff = ticks_diff
    m.sleep_ms = lambda ms: _time.sleep(ms / 1000)
    return m


class _SSLSocket:
    """MicroPython SSL socket semantics over CPython's: read/write return None on would-block."""

    def __init__(self, s):
        self._s = s

    def read(self, n):
        try:
            return self._s.recv(n)
        except (_ssl.SSLWantReadError, BlockingIOError):
            return None

    def write(self, buf):
        try:
            return self._s.send(buf)
        except (_ssl.SSLWantWriteError, _ssl.SSLWantReadError, BlockingIOError):
            return None  # want-read: mid-handshake, the transport then waits for readable

    def setblocking(self, flag):
        self._s.setblocking(flag)

    def fileno(self):
        return self._s.fileno()

    def close(self):
        self._s.close()


class _SSLContext:
    """Like MicroPython's: a fresh context verifies nothing until verify_mode is set."""

    def __init__(self, protocol):
        self._c = _ssl.SSLContext(_ssl.PROTOCOL_TLS_CLIENT)
        self._c.check_hostname = False
        self._c.verify_mode = _ssl.CERT_NONE

    @property
    def verify_mode(self):
        return self._c.verify_mode

    @verify_mode.setter
    def verify_mode(self, mode):
        self._c.check_hostname = mode == _ssl.CERT_REQUIRED
        self._c.verify_mode = mode

    def load_verify_locations(self, cadata):
        assert isinstance(cadata, bytes | bytearray), "MicroPython takes DER bytes only"
        self._c.load_verify_locations(cadata=bytes(cadata))

    def wrap_socket(self, sock, server_hostname=None, do_handshake_on_connect=True):
        return _SSLSocket(
            self._c.wrap_socket(
                sock,
                server_hostname=server_hostname,
                do_handshake_on_connect=do_handshake_on_connect,
            )
        )


def _ssl_module():
    m = types.ModuleType("ssl")
    m.SSLContext = _SSLContext
    m.PROTOCOL_TLS_CLIENT = _ssl.PROTOCOL_TLS_CLIENT
    m.CERT_NONE, m.CERT_REQUIRED = _ssl.CERT_NONE, _ssl.CERT_REQUIRED
    return m


def _simple(name, **attrs):
    m = types.ModuleType(name)
    m.__dict__.update(attrs)
    return m


def shims():
    import binascii
    import struct

    # collect: the youngest generation only; a full pass over the test process (the broker
    # holds every message) for each of the firmware's per-message collects costs ~10 ms
    gc = _simple(
        "gc", collect=lambda: _gc.collect(0), mem_free=lambda: 1 << 20, mem_alloc=lambda: 0
    )
    return {
        "time": _time_module(),
        "ssl": _ssl_module(),
        "gc": gc,
        "micropython": _simple("micropython", const=lambda x: x),
        "usocket": _socket,
        "socket": _socket,
        "select": _select,
        "ustruct": struct,
        "ubinascii": binascii,
        "uhashlib": __import__("hashlib"),
    }


class Runtime:
    """Loads firmware and umqtt modules from source into a private namespace (no sys.modules)."""

    def __init__(self, paths=(FIRMWARE, BUILD_LIB, HERE / "mp"), extra=None):
        self.paths = [Path(p) for p in paths]
        self.modules = shims()
        self.modules.update(extra or {})
        self.builtins = dict(builtins.__dict__, __import__=self._import)

    def load(self, name):
        if name in self.modules:
            return self.modules[name]
        rel = name.replace(".", "/")
        for base in self.paths:
            for path, is_pkg in (
                (base / rel / "__init__.py", True),
                (base / (rel + ".py"), False),
            ):
                if path.exists():
                    return self._exec(name, path, is_pkg)
            if (base / rel).is_dir():  # a package without __init__ (umqtt)
                mod = types.ModuleType(name)
                mod.__path__ = [str(base / rel)]
                self.modules[name] = mod
                return mod
        raise ImportError("no module named %r" % name)

    def _exec(self, name, path, is_pkg):
        mod = types.ModuleType(name)
        mod.__file__ = str(path)
        mod.__builtins__ = self.builtins
        if is_pkg:
            mod.__path__ = [str(path.parent)]
        self.modules[name] = mod
        if "." in name:
            parent, _, child = name.rpartition(".")
            setattr(self.load(parent), child, mod)
        exec(compile(path.read_text(), str(path), "exec"), mod.__dict__)
        return mod

    def _import(self, name, globals=None, locals=None, fromlist=(), level=0):
        top = name.partition(".")[0]
        local = name in self.modules or any(
            (b / top).exists() or (b / (top + ".py")).exists() for b in self.paths
        )
        if not local:
            return builtins.__import__(name, globals, locals, fromlist, level)
        mod = self.load(name)
        if fromlist:
            for item in fromlist:
                if not hasattr(mod, item) and hasattr(mod, "__path__"):
                    self.load(name + "." + item)
            return mod
        return self.load(top)

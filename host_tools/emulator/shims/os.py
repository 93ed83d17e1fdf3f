# `os` as a board's littlefs shows it: ilistdir gives sizes, and what is not the filesystem on a
# real board (the NVS partition, the eFuse MAC, uncommitted write shadows) stays out of listings.
import uos
from uos import *  # noqa: F401,F403

_HIDDEN_SUFFIXES = (".~lfs", ".~new")


def _hidden(name):
    if isinstance(name, bytes):
        name = name.decode()
    return name in (".nvs", ".efuse", ".zbhost") or name.endswith(_HIDDEN_SUFFIXES)


def ilistdir(path="."):
    base = path if isinstance(path, str) else path.decode()
    for entry in uos.ilistdir(path):
        if _hidden(entry[0]):
            continue
        size = 0
        if entry[1] == 0x8000:
            try:
                name = entry[0] if isinstance(entry[0], str) else entry[0].decode()
                size = uos.stat(base + "/" + name)[6]
            except OSError:
                pass
        yield (entry[0], entry[1], 0, size)


class _Uname:
    def __init__(self):
        import sys

        v = sys.implementation.version
        self.sysname = "virtual"
        self.nodename = "virtual"
        self.release = "%d.%d.%d" % (v[0], v[1], v[2])
        self.version = sys.version
        self.machine = sys.implementation._machine

    def __getitem__(self, i):
        return (self.sysname, self.nodename, self.release, self.version, self.machine)[i]


def uname():
    """As the ESP32 port has it (the unix port has none): machine names the board's chip."""
    return _Uname()


def listdir(path="."):
    return [e[0] for e in ilistdir(path)]


def rename(old, new):
    # The unix port's VFS loses a leading "/" of the old name when a VfsPosix is mounted at
    # "/" (the flash is, see vm/driver.py): rename from "/" with relative names instead.
    if isinstance(old, str) and old.startswith("/") and not old.startswith("/.zbhost/"):
        cwd = uos.getcwd()
        if cwd != "/":
            if not new.startswith("/"):
                new = cwd + "/" + new
            uos.chdir("/")
        try:
            uos.rename(old[1:] or ".", new)
        finally:
            if cwd != "/":
                uos.chdir(cwd)
        return
    uos.rename(old, new)

# One platform per state folder: a running Platform holds an exclusive lock on
# <state>/platform.lock, so a second one (another `zeroburn platform serve`, `make demo`) is
# refused before it touches anything: a start clears the sessions table, which would show the
# first server's connected devices offline.
import os

from host_tools.errors import ZeroburnError

LOCK_FILE = "platform.lock"

try:
    import fcntl
except ImportError:  # Windows: no advisory locks here; one platform per folder is then on you
    fcntl = None


class StateBusy(ZeroburnError):
    """Another platform serves this state folder."""


class StateLock:
    def __init__(self, state_dir):
        self.path = os.path.join(str(state_dir), LOCK_FILE)
        self.fd = None

    def acquire(self):
        if self.fd is not None or fcntl is None:
            return self
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            try:
                holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
            finally:
                os.close(fd)
            raise StateBusy(
                f"another platform (pid {holder}) is serving {os.path.dirname(self.path)}: "
                "stop it first (Ctrl-C in its terminal), or give this one another --state"
            )
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return self

    def release(self):
        if self.fd is not None:
            os.close(self.fd)  # closing drops the lock
            self.fd = None

# littlefs semantics for files written on a virtual board: new contents count only once the file
# is flushed or closed (until then the old contents stay), and a rename is atomic. A power cut
# mid-write therefore leaves the old file or the new one, never half of one.
import os

import zbboard

SHADOW = ".~lfs"  # uncommitted data lives beside the file; the host discards it at power-on


def _copy(src, dst, real_open):
    with real_open(src, "rb") as a, real_open(dst, "wb") as b:
        while True:
            chunk = a.read(1024)
            if not chunk:
                break
            b.write(chunk)


class LfsFile:
    def __init__(self, path, mode, real_open):
        self.path = path
        self.text = "b" not in mode
        self.shadow = path + SHADOW
        self.real_open = real_open
        if "a" in mode:
            try:
                _copy(path, self.shadow, real_open)
            except OSError:
                pass
            self.f = real_open(self.shadow, "ab")
        else:
            if "x" in mode:
                try:
                    os.stat(path)
                    raise OSError(17)  # EEXIST
                except OSError as e:
                    if e.args[0] == 17:
                        raise
            self.f = real_open(self.shadow, "wb")
        self.closed = False

    def write(self, data, n=None):
        zbboard.checkpoint("file_write")
        if self.text and isinstance(data, str):
            self.f.write(data.encode())
            return len(data)
        if n is not None:
            data = memoryview(data)[:n]
        return self.f.write(data)

    def flush(self):
        """Commit what was written so far (a copy renamed over the file), keep writing."""
        zbboard.checkpoint()
        self.f.flush()
        tmp = self.path + ".~new"
        _copy(self.shadow, tmp, self.real_open)
        zbboard.checkpoint("file_flush")
        os.rename(tmp, self.path)

    def close(self):
        if self.closed:
            return
        self.closed = True
        self.f.close()
        zbboard.checkpoint("file_close")
        os.rename(self.shadow, self.path)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def fileno(self):
        return self.f.fileno()


def make_open(real_open):
    def open(file, mode="r", *args, **kwargs):
        if isinstance(file, str) and ("w" in mode or "a" in mode or "x" in mode):
            if "+" not in mode:
                return LfsFile(file, mode, real_open)
        return real_open(file, mode, *args, **kwargs)

    return open

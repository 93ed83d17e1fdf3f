# Where things live: one place, so nothing else hard-codes paths.
#
# Two layouts. In a checkout (pyproject.toml and firmware/manifest.py beside host_tools/), the
# firmware, board files and build output are the checkout's. Installed (a wheel, `pipx install`),
# the firmware and board files are package data inside host_tools/ (the wheel maps firmware/ to
# host_tools/firmware and boards/ to host_tools/boards), build output and fetched MicroPython-side
# dependencies go to a per-user cache ($ZEROBURN_CACHE, else $XDG_CACHE_HOME/zeroburn), and local
# platform state to .zeroburn/ in the current folder, as in a checkout.
import os
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
_CHECKOUT = PACKAGE.parent
CHECKOUT = (_CHECKOUT / "pyproject.toml").is_file() and (
    _CHECKOUT / "firmware" / "manifest.py"
).is_file()

if CHECKOUT:
    ROOT = _CHECKOUT
    FIRMWARE = ROOT / "firmware"
    BOARDS = ROOT / "boards"
    BUILD = ROOT / "build"
    STATE = ROOT / ".zeroburn"
else:
    ROOT = PACKAGE
    FIRMWARE = PACKAGE / "firmware"
    BOARDS = PACKAGE / "boards"
    _cache = os.environ.get("ZEROBURN_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "zeroburn",
    )
    BUILD = Path(_cache)
    STATE = Path.cwd() / ".zeroburn"
BUILD_LIB = BUILD / "lib"  # MicroPython-side dependencies fetched by `make setup`
UMQTT_SIMPLE = BUILD_LIB / "umqtt" / "simple.py"
PLATFORM_STATE = STATE / "platform"
PYPROJECT = _CHECKOUT / "pyproject.toml"
# The MicroPython-side pins (umqtt.simple): package data, so an installed zeroburn has them.
MICROPYTHON_DEPS = PACKAGE / "build" / "micropython-deps.toml"
# The firmware's version, the one source: zeroburn/__init__.py's VERSION.
FIRMWARE_INIT = FIRMWARE / "zeroburn" / "__init__.py"

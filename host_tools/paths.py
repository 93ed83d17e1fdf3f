# Where things live in a checkout: one place, so nothing else hard-codes paths.
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE = ROOT / "firmware"
BOARDS = ROOT / "boards"
BUILD = ROOT / "build"
BUILD_LIB = BUILD / "lib"  # MicroPython-side dependencies fetched by `make setup`
UMQTT_SIMPLE = BUILD_LIB / "umqtt" / "simple.py"
STATE = ROOT / ".zeroburn"
PLATFORM_STATE = STATE / "platform"
PYPROJECT = ROOT / "pyproject.toml"

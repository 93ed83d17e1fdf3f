# Board definitions (boards/<name>.json): loaded and validated here, used as data, never as `if`s.
import json
from dataclasses import dataclass
from pathlib import Path

from host_tools.errors import ZeroburnError
from host_tools.paths import BOARDS

# esptool --chip names this project knows, plus the virtual board.
CHIPS = ("esp32", "esp32s3", "esp32c3", "virtual")
MPY_ARCHES = ("xtensawin", "rv32imc")
MAX_GPIO = 48  # ESP32-S3 has GPIO0..48, the others fewer


@dataclass(frozen=True)
class Adc:
    """machine.ADC of one chip: the GPIOs of ADC1 and ADC2 in channel order, the widths
    ADC.width() takes, the millivolts a full-scale reading stands for at each attenuation
    (ATTN_0DB..ATTN_11DB) and whether ADC2 is unusable while Wi-Fi is started (ESP32)."""

    adc1: tuple
    adc2: tuple
    bits: tuple
    full_scale_mv: tuple
    adc2_wifi: bool

    def data(self):
        return {
            "adc1": list(self.adc1),
            "adc2": list(self.adc2),
            "bits": list(self.bits),
            "full_scale_mv": list(self.full_scale_mv),
            "adc2_wifi": self.adc2_wifi,
        }


@dataclass(frozen=True)
class Board:
    name: str
    description: str
    chip: str
    micropython_build: str | None
    flash_offset: int | None  # where esptool writes the MicroPython image
    image_chip_id: int | None  # chip id in the ESP image header (esptool's IMAGE_CHIP_ID)
    mpy_arch: str | None  # mpy-cross -march; None: portable bytecode
    led_pin: int | None
    led_kind: str | None
    safe_mode_pin: int | None  # the BOOT button: held at boot, the application is skipped
    has_temp_sensor: bool
    gpio: tuple = ((0, MAX_GPIO),)  # the chip's GPIO numbers as (first, last) ranges
    # the port's temperature functions on this chip and the MicroPython version each exists from
    temp_functions: tuple = ()  # ((name, "1.23"), ...)
    # the port's ADC on this chip (machine_adc.c): channels, widths, read_uv's scale, ADC2 vs Wi-Fi
    adc: Adc | None = None
    notes: tuple = ()

    def has_gpio(self, n):
        return any(lo <= n <= hi for lo, hi in self.gpio)

    def gpio_text(self):
        return ", ".join(f"{lo}-{hi}" if lo != hi else str(lo) for lo, hi in self.gpio)

    @property
    def virtual(self):
        """No serial bootloader, no MicroPython image to install (chip "virtual")."""
        return self.micropython_build is None


def _gpio(value, key):
    if value is None:
        return None
    if type(value) is not int or not 0 <= value <= MAX_GPIO:
        raise ValueError(f"{key} must be a GPIO number 0..{MAX_GPIO} or null (got {value!r})")
    return value


def _offset(value):
    if value is None:
        return None
    if not isinstance(value, str) or not value.lower().startswith("0x"):
        raise ValueError(f'flash_offset must be a hex string like "0x1000" (got {value!r})')
    try:
        n = int(value, 16)
    except ValueError:
        raise ValueError(f"flash_offset {value!r} is not a hex number")
    if n % 0x1000:
        raise ValueError(f"flash_offset {value} must be a multiple of 0x1000 (a flash sector)")
    return n


def _str(value, key) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{key} must be a non-empty string")
    return value


def _text(value, key, required=True):
    if value is None and not required:
        return None
    return _str(value, key)


KEYS = {
    "description",
    "chip",
    "micropython_build",
    "flash_offset",
    "image_chip_id",
    "mpy_arch",
    "led_pin",
    "led_kind",
    "safe_mode_pin",
    "has_temp_sensor",
    "gpio",
    "temp_functions",
    "adc",
    "notes",
}
TEMP_FUNCTIONS = ("mcu_temperature", "raw_temperature")


def _ranges(value):
    ok = isinstance(value, list) and value
    for r in value if ok else ():
        ok = ok and isinstance(r, list) and len(r) == 2
        ok = ok and all(type(x) is int for x in r) and 0 <= r[0] <= r[1] <= MAX_GPIO
    if not ok:
        raise ValueError(f"gpio must be a list of [first, last] GPIO ranges (got {value!r})")
    return tuple((lo, hi) for lo, hi in value)


def _temp_functions(value):
    ok = isinstance(value, dict)
    for k, v in value.items() if ok else ():
        ok = ok and k in TEMP_FUNCTIONS and isinstance(v, str)
        ok = ok and all(p.isdigit() for p in v.split(".")) and v.count(".") >= 1
    if not ok:
        raise ValueError(
            "temp_functions must map "
            + " / ".join(TEMP_FUNCTIONS)
            + f' to the MicroPython version it exists from, e.g. "1.23" (got {value!r})'
        )
    return tuple(sorted(value.items()))


ADC_KEYS = ("adc1", "adc2", "bits", "full_scale_mv", "adc2_wifi")


def _adc(value):
    if value is None:
        return None

    def ints(v, lo, hi):
        return isinstance(v, list) and all(type(x) is int and lo <= x <= hi for x in v)

    ok = isinstance(value, dict) and sorted(value) == sorted(ADC_KEYS)
    ok = ok and ints(value["adc1"], 0, MAX_GPIO) and ints(value["adc2"], 0, MAX_GPIO)
    ok = ok and ints(value["bits"], 9, 13) and bool(value["bits"])
    mv = value["full_scale_mv"] if ok else []
    ok = ok and ints(mv, 1, 5000) and len(mv) == 4
    ok = ok and type(value["adc2_wifi"]) is bool
    if not ok:
        raise ValueError(
            "adc must be {" + ", ".join(f'"{k}"' for k in ADC_KEYS) + "}: ADC1 and ADC2 GPIOs "
            "in channel order, the widths in bits, 4 full-scale millivolts (ATTN_0DB..ATTN_11DB) "
            f"and true/false (got {value!r})"
        )
    return Adc(
        adc1=tuple(value["adc1"]),
        adc2=tuple(value["adc2"]),
        bits=tuple(value["bits"]),
        full_scale_mv=tuple(value["full_scale_mv"]),
        adc2_wifi=value["adc2_wifi"],
    )


def parse(data, name):
    """Check one board definition (a dict from JSON); ValueError says what to fix."""
    if not isinstance(data, dict):
        raise ValueError("a board definition is a JSON object")
    unknown = sorted(set(data) - KEYS)
    missing = sorted(KEYS - {"notes", "led_kind", "gpio", "temp_functions", "adc"} - set(data))
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(KEYS))})")
    if missing:
        raise ValueError(f"missing key(s): {', '.join(missing)}")
    chip = data["chip"]
    if chip not in CHIPS:
        raise ValueError(f"chip must be one of {', '.join(CHIPS)} (got {chip!r})")
    arch = data["mpy_arch"]
    if arch is not None and arch not in MPY_ARCHES:
        raise ValueError(f"mpy_arch must be one of {', '.join(MPY_ARCHES)} or null (got {arch!r})")
    build = _text(data["micropython_build"], "micropython_build", required=False)
    offset = _offset(data["flash_offset"])
    chip_id = data["image_chip_id"]
    if chip_id is not None and (type(chip_id) is not int or not 0 <= chip_id <= 0xFFFF):
        raise ValueError(f"image_chip_id must be a 16-bit number or null (got {chip_id!r})")
    real = chip != "virtual"
    # a real chip needs everything install-micropython and flash use; the virtual one none
    for key, value in (
        ("micropython_build", build),
        ("flash_offset", offset),
        ("image_chip_id", chip_id),
        ("mpy_arch", arch),
    ):
        if real and value is None:
            raise ValueError(f"{key} is required for chip {chip}")
        if not real and value is not None:
            raise ValueError(f"{key} must be null for the virtual board")
    if type(data["has_temp_sensor"]) is not bool:
        raise ValueError("has_temp_sensor must be true or false")
    led_kind = data.get("led_kind")
    if led_kind not in (None, "gpio", "ws2812"):
        raise ValueError(f'led_kind must be "gpio", "ws2812" or null (got {led_kind!r})')
    notes = data.get("notes", [])
    if not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
        raise ValueError("notes must be a list of strings")
    board = Board(
        name=name,
        description=_str(data["description"], "description"),
        chip=chip,
        micropython_build=build,
        flash_offset=offset,
        image_chip_id=chip_id,
        mpy_arch=arch,
        led_pin=_gpio(data["led_pin"], "led_pin"),
        led_kind=led_kind,
        safe_mode_pin=_gpio(data["safe_mode_pin"], "safe_mode_pin"),
        has_temp_sensor=data["has_temp_sensor"],
        gpio=_ranges(data.get("gpio", [[0, MAX_GPIO]])),
        temp_functions=_temp_functions(data.get("temp_functions", {})),
        adc=_adc(data.get("adc")),
        notes=tuple(notes),
    )
    for key in ("safe_mode_pin", "led_pin"):
        pin = getattr(board, key)
        if pin is not None and not board.has_gpio(pin):
            raise ValueError(f"{key} {pin} is not a GPIO of this chip ({board.gpio_text()})")
    for pin in board.adc.adc1 + board.adc.adc2 if board.adc else ():
        if not board.has_gpio(pin):
            raise ValueError(f"adc pin {pin} is not a GPIO of this chip ({board.gpio_text()})")
    return board


def check_config(config, board):
    """ValueError when a config dict asks for what this board's chip lacks: a safe_mode_pin
    that is no GPIO of it (machine.Pin raises ValueError for it on the board)."""
    pin = config.get("safe_mode_pin")
    if type(pin) is int and not board.has_gpio(pin):
        raise ValueError(
            f"safe_mode_pin {pin} is not a GPIO of board {board.name} "
            f"({board.chip}: GPIO {board.gpio_text()}); its BOOT button is "
            f"{board.safe_mode_pin}"
        )


def names(boards_dir=BOARDS):
    return sorted(p.stem for p in Path(boards_dir).glob("*.json"))


def load(name, boards_dir=BOARDS):
    """The board called `name` (boards/<name>.json); ZeroburnError if unknown or invalid."""
    path = Path(boards_dir) / f"{name}.json"
    if "/" in name or "\\" in name or not path.is_file():
        known = ", ".join(names(boards_dir)) or "none"
        raise ZeroburnError(f"unknown board {name!r} (known: {known})")
    try:
        data = json.loads(path.read_text())
    except ValueError as e:
        raise ZeroburnError(f"{path} is not valid JSON: {e}")
    try:
        return parse(data, name)
    except ValueError as e:
        raise ZeroburnError(f"{path}: {e}")


def load_all(boards_dir=BOARDS):
    return [load(n, boards_dir) for n in names(boards_dir)]

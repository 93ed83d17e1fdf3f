# `esp32` for a virtual board: NVS with ESP-IDF semantics, stored in the flash folder (one file
# per committed entry, replaced atomically), and the chip temperature.
import errno
import json
import os

import zbboard

# IDF codes, negated as the port raises them (OSError(-4354) and so on)
_ERR_NOT_FOUND = -0x1102  # ESP_ERR_NVS_NOT_FOUND: no such key
_ERR_INVALID_LENGTH = -0x110C  # ESP_ERR_NVS_INVALID_LENGTH: get_blob buffer too small
_ERR_NOT_FOUND = -0x1102  # ESP_ERR_NVS_NOT_FOUND (-4354): the port negates IDF codes (FACTS.md)
_KEY_MAX = 15
_pending = {}  # namespace -> {key: (kind, bytes) or None}: set but not committed (lost at reset)


def _join(*parts):
    return "/".join(parts)


def _mkdirs(path):
    cur = "/" if path.startswith("/") else ""
    for part in path.split("/"):
        if not part:
            continue
        cur = cur + part if cur in ("", "/") else cur + "/" + part
        try:
            os.mkdir(cur)
        except OSError:
            pass


class NVS:
    def __init__(self, namespace):
        if not namespace or len(namespace) > _KEY_MAX:
            raise ValueError("namespace must be 1 to 15 characters")
        self.ns = namespace
        self.dir = _join(zbboard.NVS_DIR, namespace)
        if namespace not in _pending:
            _pending[namespace] = {}

    def _check_key(self, key):
        if not isinstance(key, str) or not key or len(key) > _KEY_MAX:
            raise OSError(-0x1108, "ESP_ERR_NVS_KEY_TOO_LONG")

    def _get(self, key, kind):
        self._check_key(key)
        pend = _pending[self.ns]
        if key in pend:
            entry = pend[key]
        else:
            entry = self._load(key)
        if entry is None:
            raise OSError(_ERR_NOT_FOUND, "ESP_ERR_NVS_NOT_FOUND")
        if entry[0] != kind:
            raise OSError(-0x1104, "ESP_ERR_NVS_TYPE_MISMATCH")
        return entry[1]

    def _load(self, key):
        try:
            with open(_join(self.dir, key), "rb") as f:
                data = f.read()
        except OSError:
            return None
        return (data[:1], data[1:])

    def set_i32(self, key, value):
        self._check_key(key)
        v = value & 0xFFFFFFFF
        _pending[self.ns][key] = (b"i", bytes(((v >> s) & 0xFF) for s in (0, 8, 16, 24)))

    def get_i32(self, key):
        b = self._get(key, b"i")
        v = b[0] | b[1] << 8 | b[2] << 16 | b[3] << 24
        return v - 0x100000000 if v & 0x80000000 else v

    def set_blob(self, key, value):
        self._check_key(key)
        _pending[self.ns][key] = (b"b", bytes(value))

    def get_blob(self, key, buffer):
        data = self._get(key, b"b")
        if len(buffer) < len(data):
            raise OSError(_ERR_INVALID_LENGTH, "ESP_ERR_NVS_INVALID_LENGTH")
        buffer[: len(data)] = data
        return len(data)

    def erase_key(self, key):
        self._check_key(key)
        pend = _pending[self.ns]
        exists = (pend[key] is not None) if key in pend else self._load(key) is not None
        if not exists:
            raise OSError(_ERR_NOT_FOUND, "ESP_ERR_NVS_NOT_FOUND")
        pend[key] = None

    def commit(self):
        """Write each pending entry: atomic per entry, as NVS is (a power cut between two
        entries leaves the first written and the second not)."""
        pend = _pending[self.ns]
        if not pend:
            return
        _mkdirs(self.dir)
        for key in list(pend):
            entry = pend[key]
            path = _join(self.dir, key)
            if entry is None:
                try:
                    os.remove(path)
                except OSError:
                    pass
            else:
                zbboard.atomic_write(path, entry[0] + entry[1])
            del pend[key]
            zbboard.checkpoint("nvs_commit")  # between two entries of one commit


def _version(text):
    return tuple(int(x) for x in text.split("."))


def _mcu_temperature():
    return int(zbboard.ctl("temperature", "41"))


def _raw_temperature():
    return int(_mcu_temperature() * 1.8 + 32)  # the original ESP32's: Fahrenheit, uncalibrated


# Which temperature function this board's port has, and from which MicroPython version, is the
# board file's ("temp_functions", e.g. mcu_temperature from 1.23 on S2/S3/C3 only); the
# virtual board's MicroPython version is its setting. Absent functions raise AttributeError.
_chip = json.loads(zbboard.ctl("chip") or "{}")
_have = _version(_chip.get("micropython", "1.28"))
_funcs = {"mcu_temperature": _mcu_temperature, "raw_temperature": _raw_temperature}
for _name, _since in _chip.get("temp_functions", {"mcu_temperature": "1.23"}).items():
    if _have >= _version(_since):
        globals()[_name] = _funcs[_name]


def hall_sensor():
    return 0


class Partition:
    BOOT = 0
    RUNNING = 1

    def __init__(self, id):
        self.id = id

    def info(self):
        return (0, 0, 0x10000, 0x1F0000, "factory", False)

    def get_next_update(self):
        raise OSError(errno.ENOENT)

    @staticmethod
    def mark_app_valid_cancel_rollback():
        pass

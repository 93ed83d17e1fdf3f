# The credential record (clientId + deviceToken, never productSecret) and its power-safe stores.
import hashlib
import json
import os

# Record: b"ZB", version, payload length (2 bytes, big-endian), JSON payload, 4-byte checksum.
# Self-delimiting, so one NVS entry (or one renamed file) holds all of it: a torn write leaves
# the old record or the new one, and anything else fails the checksum and reads as absent.
_MAGIC = b"ZB"
VERSION = 1
MAX_RECORD = 384
FILE = "creds.bin"
_NVS_KEY = "cred"


def encode(d):
    payload = json.dumps(d).encode()
    if len(payload) + 9 > MAX_RECORD:
        raise ValueError("credential record too large")
    head = _MAGIC + bytes((VERSION, len(payload) >> 8, len(payload) & 0xFF))
    return head + payload + hashlib.sha256(payload).digest()[:4]


def decode(blob):
    """The record's dict, or None when the blob is absent, torn, corrupt or of another version."""
    try:
        if blob[:2] != _MAGIC or blob[2] != VERSION:
            return None
        n = blob[3] << 8 | blob[4]
        payload = bytes(blob[5 : 5 + n])
        if len(payload) != n or bytes(blob[5 + n : 9 + n]) != hashlib.sha256(payload).digest()[:4]:
            return None
        d = json.loads(payload)
        return d if isinstance(d, dict) else None
    except (IndexError, ValueError, TypeError):
        return None


class Store:
    """The record in esp32.NVS where the board has it (one blob entry, committed; NVS writes
    an entry atomically), else in a file written to a temporary name, flushed and renamed.
    .regs counts the registrations this board has made; it survives wipe()."""

    def __init__(self, nvs=None, path=FILE):
        self.nvs = nvs
        self.path = path
        self.regs = 0

    def _read(self):
        if self.nvs is not None:
            # get_blob cannot report a blob's size: read into a buffer big enough for any
            # record and let the record's own length field delimit it
            buf = bytearray(MAX_RECORD)
            try:
                self.nvs.get_blob(_NVS_KEY, buf)
            except OSError:
                return None
            return bytes(buf[: 9 + (buf[3] << 8 | buf[4])])
        try:
            with open(self.path, "rb") as f:
                return f.read(MAX_RECORD)
        except OSError:
            return None

    def load(self):
        d = decode(self._read() or b"") or {}
        self.regs = d.get("n", 0) if type(d.get("n")) is int else 0
        for k in ("pk", "dn", "cid", "tok"):
            if not isinstance(d.get(k), str):
                return None
        return d

    def save(self, d):
        d = dict(d)
        d["n"] = self.regs
        blob = encode(d)
        if self.nvs is not None:
            self.nvs.set_blob(_NVS_KEY, blob)
            self.nvs.commit()
        else:
            tmp = self.path + ".tmp"
            with open(tmp, "wb") as f:
                f.write(blob)
                f.flush()
            os.rename(tmp, self.path)
        if self._read() != blob:  # read back: a failed write must not pass for a success
            raise OSError("credential write did not verify")

    def wipe(self):
        """Forget the token, keep the registration count."""
        self.save({})


def store_of(a):
    """The store of app.App a (its NVS, or the file), carrying a's registration count."""
    s = Store(a.nvs)
    s.regs = a.regs
    return s

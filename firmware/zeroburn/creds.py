# The credential record (clientId + deviceToken, never productSecret), its power-safe stores, and
# what a refused token login does to it. Loaded only when these are needed.
import hashlib
import json
import os

from micropython import const

from zeroburn import log

# Record: b"ZB", version, payload length (2 bytes, big-endian), JSON payload, 4-byte checksum.
# Self-delimiting, so one NVS entry (or one renamed file) holds all of it: a torn write leaves
# the old record or the new one, and anything else fails the checksum and reads as absent.
# Constants are const() or inline: every module-level name is a qstr, for good, in a board's heap.
_VERSION = const(1)
_MAX_RECORD = const(384)


def encode(d):
    payload = json.dumps(d).encode()
    if len(payload) + 9 > _MAX_RECORD:
        raise ValueError("credential record too large")
    head = b"ZB" + bytes((_VERSION, len(payload) >> 8, len(payload) & 0xFF))
    return head + payload + hashlib.sha256(payload).digest()[:4]


def decode(blob):
    """The record's dict, or None when the blob is absent, torn, corrupt or of another version."""
    try:
        if blob[:2] != b"ZB" or blob[2] != _VERSION:
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

    def __init__(self, nvs=None, path="creds.bin"):
        self.nvs = nvs
        self.path = path
        self.regs = 0

    def _read(self):
        if self.nvs is not None:
            # get_blob cannot report a blob's size: read into a buffer big enough for any
            # record and let the record's own length field delimit it
            buf = bytearray(_MAX_RECORD)
            try:
                self.nvs.get_blob("cred", buf)
            except OSError:
                return None
            return bytes(buf[: 9 + (buf[3] << 8 | buf[4])])
        try:
            with open(self.path, "rb") as f:
                # the header's length field sizes the read: no _MAX_RECORD buffer in a full heap
                blob = f.read(5)
                if len(blob) == 5:
                    blob += f.read(min(_MAX_RECORD, 4 + (blob[3] << 8 | blob[4])))
                return blob
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
            self.nvs.set_blob("cred", blob)
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


def refused(a, rc):
    """The token login of App a was refused with CONNACK rc; returns the delay before the next
    step. Bad credentials (4, 5) a few times in a row wipe the token, so the board registers
    again: only then, never for network errors, as every registration burns one of 5 slots."""
    if rc not in (4, 5):
        log("mqtt", "W: login refused, CONNACK %s" % rc)
        return a.net_delay()
    # counted in meta, which deep sleep keeps: duty-cycle wakes count too
    m = a.buf.meta
    k = m["cr"] = m.get("cr", 0) + 1
    n = a.cfg.max_connwl_refusals
    log("mqtt", "W: token refused (CONNACK %d), %d of %d in a row" % (rc, k, n))
    if k < n:
        return a.net_delay()
    log("cred", "W: token revoked: wiping it and registering again")
    m["cr"] = 0
    a.rec = None
    store_of(a).wipe()
    # A token that worked before was revoked by the operator: register again at once. One
    # refused before it ever worked would burn slots in a loop: wait long.
    return 0 if m.pop("ok", 0) or not m.get("rn") else a.reg_delay()

# The credential record (clientId + deviceToken, never productSecret), its power-safe stores, the
# check of the /ext/regnwl reply that makes it, and what a refused token login does to it.
# Loaded only when these are needed.
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
_MAX_REPLY = const(512)  # a /ext/regnwl reply larger than this is not Aliyun's


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


def check_reply(msg, pk, dn):
    """Validate a /ext/regnwl payload; return the record to persist or raise ValueError."""
    if len(msg) > _MAX_REPLY:
        raise ValueError("reply too large (%d bytes)" % len(msg))
    try:
        r = json.loads(msg)
    except ValueError:
        raise ValueError("reply is not JSON")
    if not isinstance(r, dict):
        raise ValueError("reply is not a JSON object")
    for key in ("productKey", "deviceName", "clientId", "deviceToken"):
        v = r.get(key)
        if not isinstance(v, str) or not 1 <= len(v) <= 64:
            raise ValueError("reply field %s missing or not a sane string" % key)
    if r["productKey"] != pk or r["deviceName"] != dn:
        raise ValueError("reply is for another device")
    cid = r["clientId"]
    # the client id is embedded in the connwl client id: its delimiters must not appear
    for b in (cid + r["deviceToken"]).encode():  # bytes: see config.bad_char
        if b in b"|," or not 32 < b < 127:
            raise ValueError("reply clientId/deviceToken holds forbidden characters")
    return {"pk": pk, "dn": dn, "cid": cid, "tok": r["deviceToken"]}


def accept(a, msg):
    """The /ext/regnwl reply msg to App a's registration (reg.register, after the session is
    closed): checked, then the record kept in a and stored; returns the delay before the next
    step (0: go on to log in)."""
    cfg = a.cfg
    try:
        rec = check_reply(msg, cfg.product_key, a.dn)
    except ValueError as e:
        log("reg", "W: reply rejected, nothing stored: %s" % e)
        return a.reg_delay()
    m = a.buf.meta
    m["rn"] = m.get("rn", 0) + 1
    m["rf"] = 0
    a.regs += 1
    a.rec = rec
    try:
        store_of(a).save(rec)
    except OSError as e:  # keep going with the token in RAM: the slot is already spent
        log("cred", "E: token not stored: %r" % (e,))
    log("reg", "registered as %s (clientId %s, registration #%d)" % (a.dn, rec["cid"], a.regs))
    return 0


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

# Aliyun MQTT identities: deviceName, the regnwl client id and its HMAC password (connwl's, which
# needs no HMAC, is mqtt.connwl: the session does not load this module), and the check of the
# identity /ext/regnwl returns (reg loads this module again for it, its TLS session closed).
import binascii
import hashlib
import json
import os

# No micropython.const here: the host tools import this module in CPython (device names).


def hmac_hex(key, msg, method):
    """Lower-case hex HMAC (RFC 2104) over hashlib: MicroPython has no hmac module."""
    h = {"hmacsha1": "sha1", "hmacsha256": "sha256", "hmacmd5": "md5"}[method]
    h = getattr(hashlib, h, None)
    if h is None:
        raise ValueError("this MicroPython build lacks hashlib for " + method)
    if isinstance(key, str):
        key = key.encode()
    if isinstance(msg, str):
        msg = msg.encode()
    if len(key) > 64:
        key = h(key).digest()
    ipad = bytearray(64)
    opad = bytearray(64)
    for i in range(64):
        b = key[i] if i < len(key) else 0
        ipad[i] = b ^ 0x36
        opad[i] = b ^ 0x5C
    inner = h(ipad)
    inner.update(msg)
    outer = h(opad)
    outer.update(inner.digest())
    return binascii.hexlify(outer.digest()).decode()


def device_name(uid, prefix=""):
    """deviceName from the chip id (ESP32: 6-byte base MAC) as lower-case hex."""
    dn = prefix + binascii.hexlify(uid).decode()
    ok = 4 <= len(dn) <= 32
    for b in dn.encode():  # letters, digits, - _ . @ : (bytes, not str: see config.bad_char)
        ok = ok and (48 <= b <= 58 or 65 <= b <= 90 or 97 <= b <= 122 or b in b"-_.@")
    if not ok:
        raise ValueError("device name %r breaks Aliyun's deviceName rule" % dn)
    return dn


def fresh_random():
    # hex only: never one of the , | = that delimit the client id's extension block
    return binascii.hexlify(os.urandom(8)).decode()


def regnwl(cfg, dn, rnd):
    """(client id, username, password) for dynamic registration without pre-registration."""
    cid = "%s|securemode=%d,authType=regnwl,random=%s,signmethod=%s" % (
        dn,
        cfg.securemode,
        rnd,
        cfg.signmethod,
    )
    if cfg.instance_id:
        cid += ",instanceId=" + cfg.instance_id
    content = "deviceName%sproductKey%srandom%s" % (dn, cfg.product_key, rnd)
    return (
        cid + "|",
        dn + "&" + cfg.product_key,
        hmac_hex(cfg.product_secret, content, cfg.signmethod),
    )


def check_reply(msg, pk, dn):
    """Validate a /ext/regnwl payload; return the record to persist or raise ValueError."""
    if len(msg) > 512:  # a /ext/regnwl reply larger than this is not Aliyun's
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

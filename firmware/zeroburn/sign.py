# Aliyun MQTT identities: deviceName, the regnwl client id and its HMAC password (connwl's, which
# needs no HMAC, is mqtt.connwl: the session does not load this module).
import binascii
import hashlib
import os


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

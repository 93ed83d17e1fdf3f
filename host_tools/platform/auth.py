# Aliyun's MQTT authentication rules: client-id parsing, name checks and HMAC signatures.
import hashlib
import hmac
import re

SIGN_METHODS = {"hmacsha1": hashlib.sha1, "hmacsha256": hashlib.sha256, "hmacmd5": hashlib.md5}
DEVICE_NAME = re.compile(r"[A-Za-z0-9\-_.@:]{4,32}\Z")
PRODUCT_KEY = re.compile(r"[A-Za-z0-9]{1,20}\Z")
RANDOM = re.compile(r"[^,|=]{1,64}\Z")


class AuthError(Exception):
    """A refused CONNECT: cause is a short machine name (settings map it to a CONNACK code)."""

    def __init__(self, cause, detail=""):
        super().__init__(cause if not detail else f"{cause}: {detail}")
        self.cause, self.detail = cause, detail


def parse_client_id(client_id):
    """'<prefix>|k=v,k=v|' -> (prefix, {k: v}). A client id with no block gives {}.

    Unknown keys are kept (and ignored by callers); key order is free.
    """
    if "|" not in client_id:
        return client_id, {}
    prefix, _, rest = client_id.partition("|")
    if not rest.endswith("|") or "|" in rest[:-1]:
        raise AuthError("bad_client_id", "extension block must end with one '|'")
    params = {}
    body = rest[:-1]
    if body:
        for item in body.split(","):
            k, eq, v = item.partition("=")
            # Aliyun's Node.js SDK puts "\n        " before some keys; the cloud accepts it
            k = k.strip()
            if not eq or not k:
                raise AuthError("bad_client_id", f"extension item {item!r} is not k=v")
            params[k] = v
    if len(prefix) > 64:
        raise AuthError("bad_client_id", "client id prefix longer than 64 characters")
    return prefix, params


def parse_username(username):
    """'deviceName&productKey' -> (dn, pk)."""
    if not username or "&" not in username:
        raise AuthError("bad_username", "user name must be deviceName&productKey")
    dn, _, pk = username.rpartition("&")
    if not DEVICE_NAME.match(dn):
        raise AuthError("bad_device_name", "deviceName must be 4-32 of A-Z a-z 0-9 - _ . @ :")
    if not PRODUCT_KEY.match(pk):
        raise AuthError("bad_product_key", "productKey must be 1-20 alphanumerics")
    return dn, pk


def sign(method, secret, fields):
    """hex HMAC over the fields sorted by name, names and values concatenated, no separators."""
    digest = SIGN_METHODS[method]
    content = "".join(k + fields[k] for k in sorted(fields))
    return hmac.new(secret.encode("utf-8"), content.encode("utf-8"), digest).hexdigest()


def check_signature(method, secret, fields, given):
    """Constant-time, case-insensitive comparison of a hex signature."""
    if method not in SIGN_METHODS:
        raise AuthError("bad_signmethod", f"signmethod must be one of {', '.join(SIGN_METHODS)}")
    want = sign(method, secret, fields).encode()
    try:
        got = given.lower().encode("ascii")
    except (UnicodeError, AttributeError):
        got = b""
    if not hmac.compare_digest(want, got):
        raise AuthError("bad_signature")


def registration_password(method, product_secret, dn, pk, random):
    return sign(method, product_secret, {"deviceName": dn, "productKey": pk, "random": random})


def device_password(method, device_secret, client_id, dn, pk, timestamp=None):
    fields = {"clientId": client_id, "deviceName": dn, "productKey": pk}
    if timestamp is not None:
        fields["timestamp"] = timestamp
    return sign(method, device_secret, fields)


def token_hash(token):
    """Tokens are stored hashed: the SQLite file never holds a usable credential."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()

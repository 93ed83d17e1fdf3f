# The one config.json schema: the firmware and the host tools (under plain CPython) both use it.
import json

# Never printed by the host tools, never logged or published by the firmware.
SECRET_FIELDS = ("product_secret", "wifi_password")
SIGNMETHODS = ("hmacsha1", "hmacsha256", "hmacmd5")
MODES = ("continuous", "duty_cycle")

# One line a field: key, kind (S required string, s string, i integer, b boolean), default
# ("-": none), lowest and highest value (integers) or length (strings), and for strings the
# characters allowed besides letters and digits ("=": none, "*": any).
# A string rather than a table of tuples: on a board it costs one object.
SPEC = """product_key S - 1 32 =
product_secret S - 1 64 *
region s - 1 32 -
instance_id s - 1 64 -_
host s - 1 253 -.
port i 1883 1 65535
ca_file s ca.pem 1 32 -_.
signmethod s hmacsha1 1 16 *
securemode i - -2 2
device_name_prefix s "" 0 20 -_.@:
wifi_ssid S - 1 32 *
wifi_password s "" 0 64 *
ntp_host s ntp.aliyun.com 1 253 -.
interval_s i 60 1 86400
keepalive_s i 60 30 1200
mode s continuous 1 16 *
alink b false
wdt_s i 60 20 3600
connect_s i 15 5 120
buffer_max i 32 1 500
journal_s i 0 0 86400
max_connwl_refusals i 3 1 20
reg_backoff_s i 300 1 86400
safe_mode_pin i - 0 48"""


def fields():
    """[(key, kind, default, lo, hi, charset)] parsed from SPEC."""
    out = []
    for line in SPEC.split("\n"):
        p = line.split()
        kind, d = p[1], p[2]
        if kind == "b":
            out.append((p[0], kind, d == "true", 0, 0, "*"))
            continue
        d = None if d == "-" else ("" if d == '""' else d)
        if kind == "i" and d is not None:
            d = int(d)
        out.append((p[0], kind, d, int(p[3]), int(p[4]), p[5] if len(p) > 5 else "*"))
    return out


def bad_char(s, extra):
    """The first character of s that is neither an ASCII letter or digit nor in extra (bytes),
    or None. It walks bytes: iterating a str interns every character as a qstr on MicroPython,
    for good (sign and reg do the same)."""
    for b in s.encode():
        if not (48 <= b <= 57 or 65 <= b <= 90 or 97 <= b <= 122 or b in extra):
            return chr(b)
    return None


class Settings:
    """A Config's values with no method (endpoint() evaluated into .endpoint_host): holding it
    does not keep this module's code in a board's heap after boot. The declared shape, one
    attribute a SPEC line (tests check the two agree); annotations cost a board nothing."""

    product_key: str
    product_secret: str
    region: "str | None"
    instance_id: "str | None"
    host: "str | None"
    port: int
    ca_file: str
    signmethod: str
    securemode: int
    device_name_prefix: str
    wifi_ssid: str
    wifi_password: str
    ntp_host: str
    interval_s: int
    keepalive_s: int
    mode: str
    alink: bool
    wdt_s: int
    connect_s: int
    journal_s: int
    buffer_max: int
    max_connwl_refusals: int
    reg_backoff_s: int
    safe_mode_pin: "int | None"
    endpoint_host: str


class Config(Settings):
    """Validated settings; attributes are the config.json keys."""

    def endpoint(self):
        """MQTT host: explicit host, else Enterprise (instance id), else legacy public (region)."""
        if self.host:
            return self.host
        if self.instance_id:
            return self.instance_id + ".mqtt.iothub.aliyuncs.com"
        return "%s.iot-as-mqtt.%s.aliyuncs.com" % (self.product_key, self.region)


def settings(cfg):
    s = Settings()
    for k in cfg.__dict__:
        setattr(s, k, getattr(cfg, k))
    s.endpoint_host = cfg.endpoint()
    return s


def parse(d):
    """Check a config dict and return a Config; ValueError says what to fix."""
    if not isinstance(d, dict):
        raise ValueError("config must be a JSON object of key: value pairs")
    spec = fields()
    known = []
    for f in spec:
        known.append(f[0])
    for key in d:
        if key not in known and key[:1] != "_":  # "_comment" keys are allowed
            raise ValueError("unknown key %r (known: %s)" % (key, ", ".join(sorted(known))))
    cfg = Config()
    for key, kind, default, lo, hi, chars in spec:
        v = d.get(key)
        if v is None:
            if kind == "S":
                raise ValueError(key + " is required")
            v = default
        else:
            # bool is an int in Python: refuse true/false where a number is meant
            want = {"S": str, "s": str, "i": int, "b": bool}[kind]
            if type(v) is not want:
                what = {str: "a JSON string", int: "a whole number", bool: "true or false"}[want]
                raise ValueError("%s must be %s" % (key, what))
            if kind == "i" and not lo <= v <= hi:
                raise ValueError("%s must be between %d and %d (got %d)" % (key, lo, hi, v))
            if kind in "Ss":
                if not lo <= len(v) <= hi:
                    raise ValueError("%s must be %d to %d characters long" % (key, lo, hi))
                ch = None if chars == "*" else bad_char(v, b"" if chars == "=" else chars.encode())
                if ch is not None:
                    extra = "" if chars == "=" else " and " + chars
                    raise ValueError("%s may contain letters, digits%s, not %r" % (key, extra, ch))
        setattr(cfg, key, v)
    if not (cfg.region or cfg.instance_id or cfg.host):
        raise ValueError(
            "set one of region (legacy public instance, e.g. cn-shanghai), "
            "instance_id (Enterprise instance) or host (explicit endpoint)"
        )
    if cfg.signmethod not in SIGNMETHODS:
        raise ValueError("signmethod must be one of " + ", ".join(SIGNMETHODS))
    if cfg.mode not in MODES:
        raise ValueError("mode must be one of " + ", ".join(MODES))
    if cfg.wdt_s < cfg.connect_s + 5:
        # every wait of a connection feeds the watchdog, but DNS on ESP32 cannot be cut short
        # or fed: even a connect that spent its whole budget in one call must not reset the board
        raise ValueError(
            "wdt_s (%d) must be at least connect_s + 5 (%d)" % (cfg.wdt_s, cfg.connect_s + 5)
        )
    if cfg.securemode is None:
        cfg.securemode = -2 if (cfg.instance_id or cfg.host) else 2
    elif cfg.securemode not in (2, -2):
        raise ValueError("securemode must be 2 (legacy public instance) or -2 (Enterprise)")
    return cfg


def load(path="config.json"):
    """Read and check config.json; ValueError says what is wrong and how to fix it."""
    try:
        with open(path) as f:
            d = json.loads(f.read())
    except OSError:
        raise ValueError("%s not found: flash one with `zeroburn flash --config FILE`" % path)
    except ValueError:
        raise ValueError("%s is not valid JSON: check it with `zeroburn config check`" % path)
    return parse(d)

# Checks of the firmware's pure modules, run the same way under pytest (CPython) and the VM.
# Each check_* raises on failure; run_all() prints "PASS name" / "FAIL name: error" lines.
import json
import os

from fakenvs import FakeNvs
from zeroburn import alink, app, config, creds, duty, mqtt, sign, start, telemetry

SECRET = "0123456789abcdef"
MSG = "deviceNameesp32-0001productKeya1B2C3D4E5Frandom1234567890"
VECTORS = {
    "hmacsha1": "0cfe034cd1b0334c03a782a9fd2bef8e04213e02",
    "hmacsha256": "c364f6cd007bdf6360820ee149ed5a620c1e259691371f68fde817078a9e4696",
    "hmacmd5": "d53ca0bf0ed0af11bb5ecfc82d51c3e2",
}
BASE = {
    "product_key": "a1B2C3D4E5F",
    "product_secret": SECRET,
    "region": "cn-shanghai",
    "wifi_ssid": "lab",
}


def cfg(**kw):
    d = dict(BASE)
    d.update(kw)
    return config.parse(d)


def raises(fn, *args, text=""):
    try:
        fn(*args)
    except ValueError as e:
        assert text in str(e), "%r does not mention %r" % (str(e), text)
        return
    raise AssertionError("no ValueError from %r" % (args,))


def check_hmac_vectors():
    for method, want in VECTORS.items():
        assert sign.hmac_hex(SECRET, MSG, method) == want, method


def check_hmac_article_example():
    got = sign.hmac_hex(
        "h1nQFYPZS0mW2352", "deviceNamedevice1productKeyal123456789random123", "hmacsha1"
    )
    assert got == "d6146f9ad1209149bfaf56341f267283e3e2b4ad"


def check_regnwl_identity():
    c = cfg()
    cid, user, pw = sign.regnwl(c, "esp32-0001", "1234567890")
    assert cid == "esp32-0001|securemode=2,authType=regnwl,random=1234567890,signmethod=hmacsha1|"
    assert user == "esp32-0001&a1B2C3D4E5F"
    assert pw == VECTORS["hmacsha1"]
    c = cfg(instance_id="iot-06z00abc", signmethod="hmacsha256")
    cid, _, pw = sign.regnwl(c, "esp32-0001", "1234567890")
    assert cid.endswith(",signmethod=hmacsha256,instanceId=iot-06z00abc|"), cid
    assert "securemode=-2," in cid
    assert pw == VECTORS["hmacsha256"]


def check_connect_golden_regnwl():
    cid, user, pw = sign.regnwl(cfg(), "esp32-0001", "1234567890")
    want = (
        b"\x10\x9c\x01"  # CONNECT, remaining length 156
        b"\x00\x04MQTT\x04\xc2\x00\x3c"  # 3.1.1, user+password+clean session, keepalive 60
        b"\x00\x4eesp32-0001|securemode=2,authType=regnwl,random=1234567890,signmethod=hmacsha1|"
        b"\x00\x16esp32-0001&a1B2C3D4E5F"
        b"\x00\x280cfe034cd1b0334c03a782a9fd2bef8e04213e02"
    )
    assert mqtt.connect_packet(cid, user, pw, 60) == want


def check_connect_golden_connwl():
    cid, user, pw = mqtt.connwl("abcDEF123", "esp32-0001", "a1B2C3D4E5F", "tok0123456789")
    want = (
        b"\x10\x5b"
        b"\x00\x04MQTT\x04\xc2\x01\x2c"  # keepalive 300
        b"\x00\x28abcDEF123|securemode=-2,authType=connwl|"
        b"\x00\x16esp32-0001&a1B2C3D4E5F"
        b"\x00\x0dtok0123456789"
    )
    assert mqtt.connect_packet(cid, user, pw, 300) == want


def check_device_name():
    assert sign.device_name(b"\x24\x0a\xc4\x12\x34\x56") == "240ac4123456"
    assert sign.device_name(b"\x24\x0a\xc4\x12\x34\x56", "zb-") == "zb-240ac4123456"
    raises(sign.device_name, b"\x01", "", text="deviceName")
    raises(sign.device_name, b"\x01\x02\x03\x04\x05\x06", "bad/", text="deviceName")


def check_random_is_fresh_and_safe():
    a, b = sign.fresh_random(), sign.fresh_random()
    assert a != b
    for ch in ",|=":
        assert ch not in a


def check_config_defaults_and_endpoints():
    c = cfg()
    assert (c.port, c.signmethod, c.securemode, c.mode, c.ca_file) == (
        1883,
        "hmacsha1",
        2,
        "continuous",
        "ca.pem",
    )
    assert c.endpoint() == "a1B2C3D4E5F.iot-as-mqtt.cn-shanghai.aliyuncs.com"
    assert cfg(instance_id="iot-x1").endpoint() == "iot-x1.mqtt.iothub.aliyuncs.com"
    assert cfg(host="localhost", port=8883).endpoint() == "localhost"
    assert cfg(host="localhost").securemode == -2
    assert cfg(securemode=-2).securemode == -2
    assert SECRET not in repr(c)


def check_config_errors():
    raises(config.parse, [], text="JSON object")
    d = dict(BASE)
    del d["product_secret"]
    raises(config.parse, d, text="product_secret is required")
    for key, value, text in (
        ("keepalive_s", 10, "keepalive_s must be between 30 and 1200"),
        ("keepalive_s", "60", "keepalive_s must be a whole number"),
        ("alink", 1, "alink must be true or false"),
        ("port", True, "port must be a whole number"),
        ("signmethod", "sha1", "signmethod must be one of"),
        ("securemode", 0, "securemode must be 2"),
        ("securemode", 3, "securemode must be between -2 and 2"),
        ("mode", "sleepy", "mode must be one of"),
        ("product_key", "a1B2-C3", "product_key may contain letters, digits, not '-'"),
        ("product_key", "a1B2=C3", "product_key may contain letters, digits, not '='"),
        ("region", "cn_x", "region may contain letters, digits and -, not '_'"),
        ("device_name_prefix", "x" * 21, "device_name_prefix must be 0 to 20"),
        ("wifi_ssid", "", "wifi_ssid must be 1 to 32"),
        ("regoin", "cn-shanghai", "unknown key 'regoin'"),
    ):
        d = dict(BASE)
        d[key] = value
        raises(config.parse, d, text=text)
    d = dict(BASE)
    del d["region"]
    raises(config.parse, d, text="set one of region")
    d["_comment"] = "keys starting with _ are comments"
    d["host"] = "localhost"
    config.parse(d)


def check_config_load_reports_missing_and_bad_json():
    raises(config.load, "no-such-config.json", text="not found")
    with open("bad.json", "w") as f:
        f.write("{not json")
    raises(config.load, "bad.json", text="not valid JSON")
    with open("good.json", "w") as f:
        f.write(json.dumps(BASE))
    assert config.load("good.json").product_key == "a1B2C3D4E5F"


REC = {"pk": "a1B2C3D4E5F", "dn": "240ac4123456", "cid": "cid1", "tok": "tok-abc"}


def check_record_roundtrip_and_corruption():
    blob = creds.encode(REC)
    assert creds.decode(blob) == REC
    assert SECRET.encode() not in blob
    for n in range(len(blob)):  # every torn prefix reads as absent
        assert creds.decode(blob[:n]) is None, n
    for i in range(len(blob)):  # every single flipped byte is caught
        bad = bytearray(blob)
        bad[i] ^= 0x40
        assert creds.decode(bytes(bad)) != REC, i
    assert creds.decode(blob + b"trailing") == REC  # NVS buffers are bigger than the record


def _reply(**kw):
    d = {
        "productKey": "a1B2C3D4E5F",
        "deviceName": "240ac4123456",
        "clientId": "c1",
        "deviceToken": "t1",
    }
    d.update(kw)
    return json.dumps(d).encode()


def check_reply_validation():
    rec = sign.check_reply(_reply(), "a1B2C3D4E5F", "240ac4123456")
    assert rec == {"pk": "a1B2C3D4E5F", "dn": "240ac4123456", "cid": "c1", "tok": "t1"}
    bad = (
        (b"not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"productKey":"a1B2C3D4E5F","deviceName":"240ac4123456","clientId":"c1"}', "Token"),
        (_reply(deviceToken=5), "deviceToken"),
        (_reply(clientId=""), "clientId"),
        (_reply(deviceName="other"), "another device"),
        (_reply(productKey="zzz"), "another device"),
        (_reply(clientId="a|b"), "forbidden"),
        (_reply(deviceToken="x" * 65), "deviceToken"),
        (_reply(extra="y" * 600), "too large"),
    )
    for msg, text in bad:
        raises(sign.check_reply, msg, "a1B2C3D4E5F", "240ac4123456", text=text)


def _store_cycle(store, reopen):
    assert store.load() is None and store.regs == 0
    store.regs += 1
    store.save(REC)
    s2 = reopen()
    assert s2.load() == dict(REC, n=1) and s2.regs == 1
    s2.wipe()
    s3 = reopen()
    assert s3.load() is None and s3.regs == 1  # the count survives a wipe


def check_file_store():
    for name in ("creds.bin", "creds.bin.tmp"):
        try:
            os.remove(name)
        except OSError:
            pass
    _store_cycle(creds.Store(), creds.Store)
    # a power cut while the temporary file was written leaves the old record in place
    s = creds.Store()
    s.load()
    s.regs += 1
    s.save(REC)
    with open("creds.bin.tmp", "wb") as f:
        f.write(creds.encode(REC)[:7])
    assert creds.Store().load() == dict(REC, n=2)
    # a torn creds.bin itself (no rename on this filesystem) reads as absent, not garbage
    with open("creds.bin", "wb") as f:
        f.write(creds.encode(REC)[:-3])
    assert creds.Store().load() is None


def check_nvs_store_commit_semantics():
    nvs = FakeNvs()
    _store_cycle(creds.Store(nvs), lambda: creds.Store(nvs))
    s = creds.Store(nvs)
    s.load()
    s.save(REC)
    nvs.set_blob("cred", b"ZB\x01garbage")  # a write cut before commit...
    nvs.power_cut()
    assert creds.Store(nvs).load() == dict(REC, n=1)  # ...leaves the committed record
    nvs.set_blob("cred", b"\xff" * 40)
    nvs.commit()
    assert creds.Store(nvs).load() is None


def check_buffer_bounded_drop_oldest():
    b = telemetry.Buffer(3)
    for i in range(5):
        b.sample(1700000000000 + i, i, 1000, -50, None)
    assert [n for n, _ in b.items] == [3, 4, 5]
    assert b.dropped == 2
    assert "dropped" not in json.loads(b.items[0][1])  # nothing was lost before #3 was taken
    b.sample(1700000000009, 9, 1000, -50, 40.0, {"lux": 3})
    d = json.loads(b.items[-1][1])
    assert d["dropped"] == 2 and d["id"] == 6 and d["ts"] == 1700000000009
    assert d["sensors"] == {"lux": 3} and d["temp_c"] == 40.0
    # the count is cumulative: queueing #6 pushed #3 out, and the next sample says 3
    assert b.dropped == 3 and [n for n, _ in b.items] == [4, 5, 6]


def check_buffer_rtc_roundtrip():
    b = telemetry.Buffer(50)
    for i in range(40):
        b.sample(1700000000000 + i, i, 1000, -50, 41.0, {"v": i})
    b.meta["rf"] = 2
    blob = duty.dump(b)
    assert len(blob) <= duty.RTC_BYTES
    assert len(b.items) == 40  # RAM keeps every sample until it is sent
    r = telemetry.Buffer(50)
    assert start.restore(r, blob)
    kept = len(r.items)
    assert kept < 40 and r.dropped == 40 - kept  # what did not fit is counted, never silent
    assert [n for n, _ in r.items] == list(range(41 - kept, 41))
    assert r.items == b.items[-kept:] and r.seq == 40 and r.meta == {"rf": 2}
    assert not start.restore(telemetry.Buffer(5), b"")
    assert not start.restore(telemetry.Buffer(5), b"\xff\x00garbage")


def check_alink_post():
    b = telemetry.Buffer(2)
    b.sample(1700000000000, 5, 1000, -50, 41.0)
    d = json.loads(alink.post(b.items[0][1]))
    assert d["method"] == "thing.event.property.post" and d["id"] == "1"
    assert d["params"]["rssi"] == {"value": -50, "time": 1700000000000}


def check_backoff_grows_with_jitter_and_cap():
    prev_hi = 0
    for n in range(12):
        d = min(300000, 2000 << n)  # the network back-off: 2 s doubling to 5 min
        for _ in range(20):
            v = app.jittered(2000, n, 300000)
            assert d // 2 <= v <= d, (n, v)
            assert v >= prev_hi // 2
        prev_hi = d
    assert app.jittered(1000, 40, 5000) <= 5000


class _Ticks32:
    """A 32-bit port's ticks (period 2**30 ms) under virtual control, for zeroburn.clock."""

    def __init__(self, real, start):
        self.real = real
        self.t = start

    def ticks_ms(self):
        return self.t % (1 << 30)

    def ticks_add(self, t, d):
        return (t + d) % (1 << 30)

    def ticks_diff(self, a, b):
        d = (a - b) % (1 << 30)
        return d - (1 << 30) if d >= 1 << 29 else d

    def sleep_ms(self, ms):
        self.t += ms

    def gmtime(self, s=0):
        return self.real.gmtime(s)


def check_uptime_is_right_past_the_ticks_window():
    import time

    from zeroburn import clock

    vt = _Ticks32(time, (1 << 30) - 5000)  # the ticks wrap 5 s after boot
    clock.time = vt
    try:
        c = clock.Clock()
        for _ in range(24 * 30):  # 30 days, read once an hour
            vt.t += 3600000
            c.uptime_s()
        assert c.uptime_s() == 30 * 86400, c.uptime_s()
        c.sleep_ms(1500, lambda: None)  # sleeps count too
        assert c.uptime_s() == 30 * 86400 + 1
    finally:
        clock.time = time


def check_wdt_must_outlast_the_connect_deadline():
    assert cfg(wdt_s=20).connect_s == 15  # the defaults fit the smallest watchdog
    try:
        cfg(wdt_s=20, connect_s=16)
    except ValueError as e:
        assert "wdt_s (20) must be at least connect_s + 5 (21)" in str(e), str(e)
    else:
        raise AssertionError("wdt_s below connect_s + 5 accepted")
    assert cfg(wdt_s=25, connect_s=20).wdt_s == 25


def names():
    return sorted(k for k in globals() if k.startswith("check_"))


def run_all():
    g = globals()
    for name in names():
        try:
            g[name]()
            print("PASS", name)
        except Exception as e:
            print("FAIL", name, repr(e))

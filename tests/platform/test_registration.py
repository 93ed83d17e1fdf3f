# Registration (regnwl and register) through real TLS sockets, as PROTOCOL.md sections 1-4 say.
import json

import pytest

from host_tools.platform import auth, codec
from host_tools.platform.testing import (
    Client,
    connwl_login,
    events,
    login,
    register,
    regnwl_login,
    running_platform,
    wait_for,
)

DN = "esp32-0001"


def _regnwl(platform, tls, cid, user, pw):
    """CONNECT over TLS; returns (rc, result dict or None, client)."""
    c = Client(platform.mqtts_port, tls)
    rc = c.connect(cid, user, pw)
    if rc:
        assert c.closed_by_server()
        c.close()
        return rc, None
    msg = c.message("/ext/regnwl")
    c.disconnect()
    return rc, msg


@pytest.mark.parametrize("method", ["hmacsha1", "hmacsha256", "hmacmd5"])
@pytest.mark.parametrize("style", ["c", "luatos"])
def test_regnwl_both_styles_all_methods(platform, product, tls, method, style):
    pk, ps = product
    cid, user, pw = regnwl_login(DN, pk, ps, signmethod=method, style=style)
    assert (pw.isupper() or pw.isdigit()) if style == "c" else pw == pw.lower()
    rc, msg = _regnwl(platform, tls, cid, user, pw)
    assert rc == 0
    assert msg.qos == 0
    # Compact JSON, every value a string (the C SDK's parser breaks on spaces).
    assert b" " not in msg.payload and b'":"' in msg.payload
    body = json.loads(msg.payload)
    assert set(body) == {"productKey", "deviceName", "clientId", "deviceToken"}
    assert all(isinstance(v, str) for v in body.values())
    assert (body["productKey"], body["deviceName"]) == (pk, DN)
    assert len(body["deviceToken"]) < 64 and len(body["clientId"]) < 64
    assert "|" not in body["clientId"]
    # The token logs in (connwl) over TLS and over plain TCP.
    for tls_ in (True, False):
        c = login(platform, body, tls=tls_)
        c.disconnect()
    kinds = [e["kind"] for e in events(platform, device_name=DN)]
    assert "register" in kinds and "login" in kinds


def test_unknown_keys_instance_id_and_securemode_minus_2(platform, product, tls):
    pk, ps = product
    sig = auth.registration_password("hmacsha1", ps, DN, pk, "r4nd0m")
    cid = (
        f"{DN}|_v=1.0,ext=3,instanceId=iot-06z00,signmethod=hmacsha1,random=r4nd0m,"
        "authType=regnwl,lan=C,securemode=-2,_ss=1|"
    )
    rc, msg = _regnwl(platform, tls, cid, f"{DN}&{pk}", sig)
    assert rc == 0 and json.loads(msg.payload)["deviceName"] == DN


@pytest.mark.parametrize(
    "mutate, code, cause",
    [
        (
            lambda cid, u, p: (cid.replace("authType=regnwl", "authType=regnw"), u, p),
            2,
            "bad_params",
        ),
        (lambda cid, u, p: (cid.replace("random=", "rnd="), u, p), 2, "bad_params"),
        (lambda cid, u, p: (cid.replace("hmacsha256", "hmacsha512"), u, p), 2, "bad_signmethod"),
        (lambda cid, u, p: (cid.replace("securemode=2", "securemode=3"), u, p), 2, "bad_params"),
        (lambda cid, u, p: (cid, u.replace("&", "#"), p), 2, "bad_username"),
        (lambda cid, u, p: (cid, u, ""), 2, "bad_params"),
        (lambda cid, u, p: (cid, u, p[:-1] + ("0" if p[-1] != "0" else "1")), 4, "bad_signature"),
        (lambda cid, u, p: (cid, u.replace("&", "&x"), p), 4, "unknown_product"),
    ],
)
def test_refusals(platform, product, tls, mutate, code, cause):
    pk, ps = product
    cid, user, pw = mutate(*regnwl_login(DN, pk, ps))
    rc, _ = _regnwl(platform, tls, cid, user, pw)
    assert rc == code
    refusals = wait_for(lambda: events(platform, kind="refuse"))
    assert refusals[-1]["cause"] == cause
    assert platform.registry.devices(pk) == []  # nothing was created


def test_plain_tcp_registration_refused_with_2(platform, product):
    pk, ps = product
    with Client(platform.mqtt_port) as c:
        assert c.connect(*regnwl_login(DN, pk, ps)) == 2
        assert c.closed_by_server()


def test_dynamic_registration_off_then_on_existing_devices_keep_working(platform, product, tls):
    pk, ps = product
    reg = register(platform, pk, ps, DN)
    platform.registry.set_dynamic_registration(pk, False)
    rc, _ = _regnwl(platform, tls, *regnwl_login("esp32-0002", pk, ps))
    assert rc == 4
    assert events(platform, kind="refuse")[-1]["cause"] == "dynamic_registration_off"
    login(platform, reg).disconnect()  # activated devices keep working
    platform.registry.set_dynamic_registration(pk, True)
    assert register(platform, pk, ps, "esp32-0002")["deviceName"] == "esp32-0002"


def test_activation_limit_keep_and_clear(platform, product, tls):
    pk, ps = product
    regs = [register(platform, pk, ps, DN) for _ in range(5)]
    assert len({r["clientId"] for r in regs}) == 5
    assert len({r["deviceToken"] for r in regs}) == 5
    rc, _ = _regnwl(platform, tls, *regnwl_login(DN, pk, ps))
    assert rc == 4
    assert events(platform, kind="refuse")[-1]["cause"] == "activation_limit"
    dev = platform.registry.devices(pk)[0]
    assert dev["registrations"] == 5 and len(dev["client_ids"]) == 5
    # keep one: the others are refused at connwl; the slots stay used.
    platform.registry.keep_client_id(pk, DN, regs[2]["clientId"])
    login(platform, regs[2]).disconnect()
    for r in (regs[0], regs[4]):
        with pytest.raises(ConnectionRefusedError) as e:
            login(platform, r)
        assert e.value.args[0] == 4
    assert events(platform, kind="refuse")[-1]["cause"] == "revoked_client_id"
    assert _regnwl(platform, tls, *regnwl_login(DN, pk, ps))[0] == 4
    # clear: every token dies and the device can register again.
    platform.registry.clear_device(pk, DN)
    with pytest.raises(ConnectionRefusedError):
        login(platform, regs[2])
    assert platform.registry.client_ids(pk, DN) == []
    again = register(platform, pk, ps, DN)
    login(platform, again).disconnect()


def test_lingering_registration_session_closed(platform, product, tls):
    pk, ps = product
    c = Client(platform.mqtts_port, tls)
    assert c.connect(*regnwl_login(DN, pk, ps)) == 0
    c.message("/ext/regnwl")
    assert c.closed_by_server(timeout=5)  # linger_s=1 in the fixture
    ev = wait_for(lambda: events(platform, kind="disconnect"))
    assert ev[-1]["cause"] == "linger"


def test_registration_session_accepts_no_device_traffic(platform, product, tls):
    pk, ps = product
    with Client(platform.mqtts_port, tls) as c:
        assert c.connect(*regnwl_login(DN, pk, ps)) == 0
        c.message("/ext/regnwl")
        assert c.subscribe(f"/sys/{pk}/{DN}/#", "/ext/regnwl") == [0x80, 1]
        c.publish(f"/{pk}/{DN}/user/update", b"x", qos=1)  # acknowledged, dropped
        c.ping()
    platform.flush()
    assert platform.registry.messages(device_name=DN) == []


def test_reply_delayed_and_withheld(platform, product, tls):
    pk, ps = product
    platform.delay_registration_reply(0.5)
    with Client(platform.mqtts_port, tls) as c:
        assert c.connect(*regnwl_login(DN, pk, ps)) == 0
        with pytest.raises(TimeoutError):
            c.message("/ext/regnwl", timeout=0.2)
        assert c.message("/ext/regnwl", timeout=5)
    platform.delay_registration_reply(0)
    platform.withhold_registration_reply(True)
    with Client(platform.mqtts_port, tls) as c:
        assert c.connect(*regnwl_login("esp32-0002", pk, ps)) == 0
        assert c.closed_by_server(timeout=5)  # no reply, then the linger close
        assert not [p for p in c.inbox if isinstance(p, codec.Publish)]
    # the withheld registration still burned a slot, as on the real platform
    assert len(platform.registry.client_ids(pk, "esp32-0002")) == 1


def test_codes_are_settings(tmp_path):
    codes = {"bad_signature": 5, "activation_limit": 3}
    with running_platform(tmp_path / "p", refuse_codes=codes, activation_limit=1) as plat:
        pk, ps = plat.registry.add_product()
        tls = __import__("host_tools.platform.testing", fromlist=["x"]).client_context(
            plat.ca_path
        )
        cid, user, pw = regnwl_login(DN, pk, ps)
        assert _regnwl(plat, tls, cid, user, pw.lower().replace("a", "b", 1) + "0")[0] == 5
        register(plat, pk, ps, DN)
        assert _regnwl(plat, tls, *regnwl_login(DN, pk, ps))[0] == 3


def test_preregistered_register_and_device_secret_login(platform, product, tls):
    pk, ps = product
    # authType=register needs the device to exist first.
    cid, user, pw = regnwl_login(DN, pk, ps)
    cid = cid.replace("regnwl", "register")
    with Client(platform.mqtts_port, tls) as c:
        assert c.connect(cid, user, pw) == 4
    secret = platform.registry.add_device(pk, DN)
    with Client(platform.mqtts_port, tls) as c:
        assert c.connect(cid, user, pw) == 0
        body = json.loads(c.message("/ext/register").payload)
    assert body == {"productKey": pk, "deviceName": DN, "deviceSecret": secret}
    # Ordinary device-secret login (what Aliyun's Node and Python SDKs do).
    prefix = f"{pk}&{DN}"
    ts = "1700000000000"
    pw = auth.device_password("hmacsha1", secret, prefix, DN, pk, ts)
    cid = f"{prefix}|securemode=2,signmethod=hmacsha1,timestamp={ts},_v=1|"
    with Client(platform.mqtts_port, tls) as c:
        assert c.connect(cid, f"{DN}&{pk}", pw) == 0
    with Client(platform.mqtts_port, tls) as c:
        assert c.connect(cid, f"{DN}&{pk}", pw.replace(pw[0], "x")) == 4


def test_connwl_refusals(platform, product, tls):
    pk, ps = product
    reg = register(platform, pk, ps, DN)
    cases = [
        (dict(reg, deviceToken="wrong"), 4, "bad_token"),
        (dict(reg, clientId=reg["clientId"] + "x"), 4, "unknown_client_id"),
        (dict(reg, deviceName="esp32-9999"), 4, "unknown_device"),
    ]
    for r, code, cause in cases:
        with pytest.raises(ConnectionRefusedError) as e:
            login(platform, r)
        assert e.value.args[0] == code
        assert events(platform, kind="refuse")[-1]["cause"] == cause
    cid, user, pw = connwl_login(reg["clientId"], DN, pk, reg["deviceToken"])
    with Client(platform.mqtts_port, tls) as c:  # connwl needs securemode=-2
        assert c.connect(cid.replace("=-2", "=2"), user, pw) == 2

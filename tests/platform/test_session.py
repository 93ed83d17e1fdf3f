# Logged-in device sessions: keepalive, kick, permissions, routing, NTP, property post, operator.
import json

import pytest

from host_tools.platform import codec
from host_tools.platform.registry import Registry
from host_tools.platform.testing import (
    Client,
    client_context,
    connwl_login,
    events,
    login,
    register,
    running_platform,
    wait_for,
)

DN = "esp32-0001"


@pytest.fixture
def device(platform, product):
    pk, ps = product
    return register(platform, pk, ps, DN)


def test_keepalive_bounds(platform, device, tls):
    cid, user, pw = connwl_login(
        device["clientId"], DN, device["productKey"], device["deviceToken"]
    )
    with Client(platform.mqtts_port, tls) as c:
        assert c.connect(cid, user, pw, keepalive=29) == 2
    assert events(platform, kind="refuse")[-1]["cause"] == "keepalive_too_short"
    with Client(platform.mqtts_port, tls) as c:
        assert c.connect(cid, user, pw, keepalive=0) == 2
    with Client(platform.mqtts_port, tls) as c:  # above 1200: clamped by default
        assert c.connect(cid, user, pw, keepalive=3600) == 0
        c.ping()


def test_keepalive_above_max_refused_when_set(tmp_path):
    with running_platform(tmp_path / "p", keepalive_above_max="refuse") as plat:
        pk, ps = plat.registry.add_product()
        reg = register(plat, pk, ps, DN)
        with pytest.raises(ConnectionRefusedError):
            login(plat, reg, keepalive=1201)
        login(plat, reg, keepalive=1200).disconnect()


def test_silence_closes_after_one_and_a_half_keepalive(tmp_path):
    with running_platform(tmp_path / "p", keepalive_min=1, keepalive_max=2) as plat:
        pk, ps = plat.registry.add_product()
        reg = register(plat, pk, ps, DN)
        talker = login(plat, reg, keepalive=1)
        # A client that pings within its keepalive stays connected past 1.5 x keepalive.
        for _ in range(4):
            talker.ping()
            assert not talker.closed_by_server(timeout=0.5)
        talker.close()
        silent = login(plat, reg, keepalive=1)
        assert silent.closed_by_server(timeout=5)
        ev = wait_for(
            lambda: [
                e for e in events(plat, kind="disconnect") if e["cause"] == "keepalive_timeout"
            ]
        )
        assert ev[0]["device_name"] == DN


def test_second_login_kicks_the_first(platform, device):
    first = login(platform, device)
    second = login(platform, device)
    assert first.closed_by_server()
    second.ping()
    kicks = wait_for(lambda: events(platform, kind="kick"))
    assert kicks[-1]["cause"] == "duplicate_login"
    d = platform.registry.devices()[0]
    assert d["online"] and d["online_client_id"] == device["clientId"]
    second.disconnect()
    wait_for(lambda: not platform.registry.devices()[0]["online"])


def test_permissions(platform, device):
    pk = device["productKey"]
    c = login(platform, device)
    granted = c.subscribe(
        f"/{pk}/{DN}/user/get",
        f"/sys/{pk}/{DN}/thing/#",
        f"/{pk}/other-dev/user/get",
        f"/sys/{pk}/+/thing/#",
        "#",
        f"/{pk}/{DN}/user/update",
    )
    assert granted == [1, 1, 0x80, 0x80, 0x80, 0x80]
    c.publish(f"/{pk}/{DN}/user/update", b"ok", qos=1)
    c.publish(f"/{pk}/{DN}/user/get", b"forbidden", qos=1)  # acknowledged, dropped
    c.publish(f"/{pk}/other-dev/user/update", b"forbidden", qos=1)
    c.ping()  # the connection stays open
    platform.flush()
    assert [m["payload"] for m in platform.registry.messages(device_name=DN)] == [b"ok"]
    assert len([e for e in events(platform, kind="forbidden") if e["cause"] == "publish"]) == 2
    c.disconnect()


def test_qos1_publish_stored_with_topic_qos_time(platform, device):
    pk = device["productKey"]
    c = login(platform, device)
    for i in range(20):
        c.publish(f"/{pk}/{DN}/user/update", json.dumps({"id": i}), qos=i % 2)
    c.publish(f"/{pk}/{DN}/user/update", b"last", qos=1)  # PUBACK => everything before committed
    rows = platform.registry.messages(device_name=DN)
    assert [r["payload"] for r in rows][-1] == b"last"
    assert [json.loads(r["payload"])["id"] for r in rows[:-1]] == list(range(20))
    assert [r["qos"] for r in rows[:4]] == [0, 1, 0, 1]
    assert rows[0]["client_id"] == device["clientId"] and rows[0]["time"] > 0
    assert platform.registry.messages(device_name=DN, limit=2)[0]["payload"] == b'{"id": 19}'
    c.disconnect()


def test_ntp_responder(platform, device):
    pk = device["productKey"]
    c = login(platform, device)
    # Answered to the asker even without a subscription (reply_to_requester=True).
    c.publish(f"/ext/ntp/{pk}/{DN}/request", b'{"deviceSendTime":"1000"}')
    m = c.message(f"/ext/ntp/{pk}/{DN}/response")
    body = json.loads(m.payload)
    assert body["deviceSendTime"] == "1000"
    assert all(isinstance(body[k], str) for k in ("serverRecvTime", "serverSendTime"))
    assert int(body["serverSendTime"]) >= int(body["serverRecvTime"]) > 1_600_000_000_000
    # Subscribed: exactly one copy.
    assert c.subscribe(f"/ext/ntp/{pk}/{DN}/response") == [1]
    c.publish(f"/ext/ntp/{pk}/{DN}/request", b'{"deviceSendTime":"2000"}')
    c.message(f"/ext/ntp/{pk}/{DN}/response")
    c.ping()
    assert not [p for p in c.inbox if isinstance(p, codec.Publish)]
    c.disconnect()


def test_property_post_reply_and_ack_0(platform, device):
    pk = device["productKey"]
    topic = f"/sys/{pk}/{DN}/thing/event/property/post"
    c = login(platform, device)
    c.subscribe(topic + "_reply")
    post = {
        "id": "123",
        "version": "1.0",
        "sys": {"ack": 1},
        "params": {"Temp": {"value": 23.6, "time": 1524448722000}},
        "method": "thing.event.property.post",
    }
    c.publish(topic, json.dumps(post), qos=1)
    reply = json.loads(c.message(topic + "_reply").payload)
    assert reply == {
        "id": "123",
        "code": 200,
        "data": {},
        "message": "success",
        "method": "thing.event.property.post",
        "version": "1.0",
    }
    post.update(id="124", sys={"ack": 0})
    c.publish(topic, json.dumps(post), qos=1)
    with pytest.raises(TimeoutError):
        c.message(topic + "_reply", timeout=0.3)
    c.disconnect()


def test_routing_observer_downlink_and_will(tmp_path):
    with running_platform(tmp_path / "p", observer_password="obs") as plat:
        pk, ps = plat.registry.add_product()
        a = register(plat, pk, ps, "dev-a")
        tls = client_context(plat.ca_path)
        obs = Client(plat.mqtts_port, tls)
        assert obs.connect("app-1", "observer", "nope") == 4
        obs = Client(plat.mqtts_port, tls)
        assert obs.connect("app-1", "observer", "obs") == 0
        assert obs.subscribe(f"/{pk}/+/user/update", f"/{pk}/+/user/will") == [1, 1]
        cid, user, pw = connwl_login(a["clientId"], "dev-a", pk, a["deviceToken"])
        dev = Client(plat.mqtts_port, tls)
        custom_will = (f"/{pk}/dev-a/user/update", b"gone", 1, False)
        assert dev.connect(cid, user, pw, will=custom_will) == 0
        assert dev.subscribe(f"/{pk}/dev-a/user/get") == [1]
        dev.publish(f"/{pk}/dev-a/user/update", b"hello", qos=1)
        m = obs.message()
        assert (m.topic, m.payload, m.qos) == (f"/{pk}/dev-a/user/update", b"hello", 1)
        # Downlink from an application client and from the platform API (Pub).
        obs.publish(f"/{pk}/dev-a/user/get", b"cmd1", qos=1)
        assert dev.message(f"/{pk}/dev-a/user/get").payload == b"cmd1"
        assert plat.publish(f"/{pk}/dev-a/user/get", b"cmd2") == 1
        assert dev.message(f"/{pk}/dev-a/user/get").payload == b"cmd2"
        # The will fires when the device vanishes without DISCONNECT.
        assert plat.drop("dev-a") == 1
        assert obs.message(f"/{pk}/dev-a/user/update").payload == b"gone"
        obs.disconnect()


def test_operator_actions_from_another_connection_end_sessions(platform, device):
    pk = device["productKey"]
    operator = Registry(platform.state_dir)  # what the CLI opens while `serve` runs
    try:
        c = login(platform, device)
        operator.disable_device(pk, DN)
        assert c.closed_by_server(timeout=5)
        with pytest.raises(ConnectionRefusedError):
            login(platform, device)
        assert events(platform, kind="refuse")[-1]["cause"] == "device_disabled"
        operator.enable_device(pk, DN)
        c = login(platform, device)
        operator.delete_device(pk, DN)
        assert c.closed_by_server(timeout=5)
        assert operator.devices(pk) == []
        with pytest.raises(ConnectionRefusedError):
            login(platform, device)
    finally:
        operator.close()


def test_keep_ends_the_live_session_of_a_revoked_client_id(platform, product):
    pk, ps = product
    first, second = register(platform, pk, ps, DN), register(platform, pk, ps, DN)
    c = login(platform, first)
    platform.registry.keep_client_id(pk, DN, second["clientId"])
    assert c.closed_by_server(timeout=5)
    kicks = wait_for(
        lambda: [e for e in events(platform, kind="kick") if e["cause"] == "operator"]
    )
    assert kicks[0]["client_id"] == first["clientId"]
    login(platform, second).disconnect()


def test_unknown_setting_is_a_clear_error(tmp_path):
    from host_tools.platform.server import Platform

    with pytest.raises(ValueError, match="keepalive_minimum"):
        Platform(tmp_path / "p", keepalive_minimum=1)

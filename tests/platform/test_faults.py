# Bad input, fault injection and restarts: one bad client never hurts the others or the data.
import json
import os
import random
import socket
import ssl

import pytest

from host_tools.platform import codec
from host_tools.platform.server import Platform
from host_tools.platform.testing import (
    Client,
    client_context,
    events,
    login,
    register,
    regnwl_login,
    running_platform,
    wait_for,
)

DN = "esp32-0001"


def _bad(platform, payload, tls=None):
    """Send raw bytes on a fresh connection; True if the server closed it."""
    with Client(platform.mqtts_port if tls else platform.mqtt_port, tls) as c:
        c.send(payload)
        return c.closed_by_server(timeout=5)


@pytest.mark.parametrize(
    "raw, detail",
    [
        (codec.PINGREQ_BYTES, "first packet is not CONNECT"),
        (b"\x30\x84\x80\x80\x01", "exceeds"),  # remaining length 2 MiB
        (codec.packet(0x10, b"\x00\x04MQTT\x04\x02\x00\x3c\x00\x02\xff\xfe"), "UTF-8"),
    ],
)
def test_bad_first_packets_close_only_that_connection(platform, product, raw, detail):
    pk, ps = product
    reg = register(platform, pk, ps, DN)
    good = login(platform, reg)
    assert _bad(platform, raw)
    ev = wait_for(lambda: events(platform, kind="protocol_error"))
    assert detail in ev[-1]["detail"]
    good.ping()  # the others carry on
    good.disconnect()


def test_second_connect_and_qos2_close_the_session(platform, product):
    pk, ps = product
    reg = register(platform, pk, ps, DN)
    c = login(platform, reg)
    c.send(codec.encode_connect("again"))
    assert c.closed_by_server()
    c = login(platform, reg)
    c.send(codec.encode_publish(f"/{pk}/{DN}/user/update", b"x", 2, 1))
    assert c.closed_by_server()
    details = [e["detail"] for e in events(platform, kind="protocol_error")]
    assert "second CONNECT on a connection" in details and "QoS 2 is not supported" in details


def test_random_bytes_on_both_listeners_never_stop_the_server(platform, product, tls):
    pk, ps = product
    rng = random.Random(1234)
    for i in range(60):
        blob = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 400)))
        if i % 3 == 0:
            blob = b"\x10" + blob  # looks like CONNECT, garbage after
        for port in (platform.mqtt_port, platform.mqtts_port):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                try:
                    s.sendall(blob)
                    s.shutdown(socket.SHUT_WR)
                    s.recv(100)
                except OSError:
                    pass
    # Garbage inside a TLS session too.
    for _ in range(10):
        with Client(platform.mqtts_port, tls) as c:
            c.send(os.urandom(200))
            c.closed_by_server(timeout=2)
    reg = register(platform, pk, ps, DN)
    c = login(platform, reg)
    c.publish(f"/{pk}/{DN}/user/update", b"still here", qos=1)
    c.disconnect()


def test_refuse_next_n(platform, product, tls):
    pk, ps = product
    platform.refuse_next(2, code=3)
    for _ in range(2):
        with Client(platform.mqtts_port, tls) as c:
            assert c.connect(*regnwl_login(DN, pk, ps)) == 3
    assert register(platform, pk, ps, DN)["deviceName"] == DN
    assert [e["cause"] for e in events(platform, kind="refuse")] == ["injected", "injected"]


def test_drop_device(platform, product):
    pk, ps = product
    reg = register(platform, pk, ps, DN)
    c = login(platform, reg)
    assert platform.drop(DN) == 1
    assert c.closed_by_server()
    assert platform.drop(DN) == 0
    assert wait_for(lambda: [e for e in events(platform, kind="kick") if e["cause"] == "dropped"])


def test_stop_and_restart_listening_on_same_ports(platform, product, tls):
    pk, ps = product
    reg = register(platform, pk, ps, DN)
    c = login(platform, reg)
    ports = (platform.mqtt_port, platform.mqtts_port)
    platform.stop_listening()
    assert c.closed_by_server()
    for port in ports:
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
    platform.start_listening()
    assert (platform.mqtt_port, platform.mqtts_port) == ports
    login(platform, reg).disconnect()


def test_restart_keeps_ca_ports_data_and_every_acknowledged_message(tmp_path):
    state = tmp_path / "p"
    plat = Platform(state, linger_s=1, uplink_qps=0)  # 200 back to back: over Aliyun's 30/s
    plat.start()
    try:
        pk, ps = plat.registry.add_product()
        reg = register(plat, pk, ps, DN)
        c = login(plat, reg)
        acked = []
        for i in range(200):
            c.publish(f"/{pk}/{DN}/user/update", json.dumps({"id": i}), qos=1)
            acked.append(i)
        ca = open(plat.ca_path).read()
        ports = (plat.mqtt_port, plat.mqtts_port)
        plat.stop()  # no flush: acknowledged means committed
        assert c.closed_by_server()
        plat.start()
        assert (plat.mqtt_port, plat.mqtts_port) == ports
        assert open(plat.ca_path).read() == ca
        stored = [json.loads(m["payload"])["id"] for m in plat.registry.messages(device_name=DN)]
        assert stored == acked
        login(plat, reg).disconnect()  # same token still valid, over the same CA
    finally:
        plat.close()
    # A brand-new Platform object on the same folder: same CA, same devices.
    with running_platform(state) as again:
        assert open(again.ca_path).read() == ca
        assert again.registry.devices(pk)[0]["registrations"] == 1
        ctx = client_context(again.ca_path)
        with Client(
            again.mqtts_port, ctx, server_hostname=f"{pk}.iot-as-mqtt.cn-shanghai.aliyuncs.com"
        ) as cl:
            cl.send(codec.PINGREQ_BYTES)  # TLS verified against Aliyun's host pattern
            assert cl.closed_by_server()


def test_server_certificate_names(platform):
    ctx = client_context(platform.ca_path)
    for host in (
        "localhost",
        "a1B2C3D4E5F.iot-as-mqtt.cn-beijing.aliyuncs.com",
        "a1B2C3D4E5F.iot-as-mqtt.eu-central-1.aliyuncs.com",
        "iot-06z00abc.mqtt.iothub.aliyuncs.com",
    ):
        with socket.create_connection(("127.0.0.1", platform.mqtts_port), timeout=5) as raw:
            ctx.wrap_socket(raw, server_hostname=host).close()
    with socket.create_connection(("127.0.0.1", platform.mqtts_port), timeout=5) as raw:
        with pytest.raises(ssl.SSLCertVerificationError):
            ctx.wrap_socket(raw, server_hostname="example.com")


def test_secrets_never_logged(tmp_path, caplog):
    caplog.set_level("DEBUG", logger="zeroburn.platform")
    with running_platform(tmp_path / "p", linger_s=0.2) as plat:
        pk, ps = plat.registry.add_product()
        reg = register(plat, pk, ps, DN)
        login(plat, reg).disconnect()
        bad = dict(reg, deviceToken=reg["deviceToken"][::-1])
        with pytest.raises(ConnectionRefusedError):
            login(plat, bad)
        cid, user, pw = regnwl_login(DN, pk, ps)
        with Client(plat.mqtts_port, client_context(plat.ca_path)) as c:
            c.connect(cid, user, pw[:-2] + "00")
        plat.flush()
    text = caplog.text
    assert "refused" in text  # refusals are logged ...
    for secret in (ps, reg["deviceToken"], bad["deviceToken"], pw, pw[:-2]):
        assert secret not in text  # ... without any secret


def test_port_in_use_is_reported_and_nothing_leaks(platform, tmp_path):
    busy = Platform(tmp_path / "other", mqtt_port=platform.mqtt_port)
    with pytest.raises(OSError):
        busy.start()
    assert not busy.running
    busy.registry.close()

# Aliyun's own Python device SDK (aliyun-iot-linkkit 1.2.13, paho-mqtt 1.6.1) runs regnwl and
# then connwl against the emulator, unpatched: pointed at it only through its config_mqtt().
import threading
from pathlib import Path

from linkkit import linkkit

from host_tools.platform.testing import events, wait_for

DN = "sdk-device-01"


def _kit(platform, pk, **kw):
    kit = linkkit.LinkKit(host_name="cn-shanghai", product_key=pk, device_name=DN, **kw)
    kit.config_mqtt(
        port=platform.mqtts_port,
        secure="TLS",
        cadata=Path(platform.ca_path).read_text(),
        endpoint="localhost",  # the server certificate names localhost; the host is verified
        auto_reconnect_max_sec=2,
    )
    return kit


def test_sdk_regnwl_then_connwl(platform, product):
    pk, ps = product
    got = {}
    done = threading.Event()

    def on_reply(rc, client_id, username, password, *_):
        got.update(rc=rc, client_id=client_id, username=username, password=password)
        done.set()

    kit = _kit(platform, pk, device_secret="", product_secret=ps, auth_type="regnwl")
    kit.on_device_dynamic_register_nwl_reply = on_reply
    kit.connect_async()
    try:
        assert done.wait(20), "the SDK never got its registration result"
    finally:
        kit.destroy()
    assert got["rc"] == 0
    assert got["username"] == f"{DN}&{pk}"
    assert got["client_id"].endswith(
        "|authType=connwl,securemode=-2,_ss=1,ext=3,lan=Python,_v=1.2.13|"
    )

    connected = threading.Event()
    kit = _kit(
        platform,
        pk,
        device_secret="",
        client_id=got["client_id"],
        username=got["username"],
        password=got["password"],
    )
    kit.on_connect = lambda session_flag, rc, userdata: rc == 0 and connected.set()
    kit.connect_async()
    try:
        assert connected.wait(20), "the SDK did not log in with its token"
        kit.publish_topic(f"/{pk}/{DN}/user/update", '{"id":"1","temp":"21.5"}', qos=1)
        msgs = wait_for(lambda: platform.registry.messages(device_name=DN), timeout=10)
        assert msgs[0]["payload"] == b'{"id":"1","temp":"21.5"}'
    finally:
        kit.destroy()
    kinds = [e["kind"] for e in events(platform, device_name=DN)]
    assert kinds.count("register") == 1 and "login" in kinds
    assert not events(platform, kind="refuse")

# HTTPS dynamic registration of pre-registered devices (PROTOCOL.md section 8), over a real TLS
# socket under the iot-auth host name, then the device-secret login it enables.
import json
import socket
import time
from urllib.parse import urlencode

import pytest

from host_tools.platform import auth
from host_tools.platform.https import DEFAULT_HTTPS_CODES
from host_tools.platform.testing import Client, client_context, events, running_platform

AUTH_HOST = "iot-auth.cn-shanghai.aliyuncs.com"
DN = "c0ffee00aa01"


def post(plat, body, path="/auth/register/device", method="POST"):
    """(HTTP status, JSON answer) of one request, TLS verified under Aliyun's iot-auth name."""
    data = (urlencode(body) if isinstance(body, dict) else body).encode()
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: {AUTH_HOST}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(data)}\r\n\r\n"
    )
    raw = socket.create_connection(("127.0.0.1", plat.https_port), timeout=10)
    with client_context(plat.ca_path).wrap_socket(raw, server_hostname=AUTH_HOST) as s:
        s.sendall(head.encode() + data)
        answer = b""
        while chunk := s.recv(4096):  # the platform closes after its answer
            answer += chunk
    top, _, payload = answer.partition(b"\r\n\r\n")
    return int(top.split()[1]), json.loads(payload)


def form(pk, ps, dn=DN, method="hmacsha1", upper=False, **over):
    rnd = "k3j4h5g6f7"
    sign = auth.sign(method, ps, {"deviceName": dn, "productKey": pk, "random": rnd})
    f = {"productKey": pk, "deviceName": dn, "random": rnd, "sign": sign, "signMethod": method}
    if upper:
        f["sign"] = sign.upper()
    f.update(over)
    return f


def secret_login(plat, pk, dn, ds, tls=True):
    ts = str(int(time.time() * 1000))
    cid = "dev-1"
    pw = auth.device_password("hmacsha256", ds, cid, dn, pk, ts)
    client_id = f"{cid}|securemode={2 if tls else 3},signmethod=hmacsha256,timestamp={ts}|"
    ctx = client_context(plat.ca_path) if tls else None
    c = Client(plat.mqtts_port if tls else plat.mqtt_port, ctx)
    return c, c.connect(client_id, f"{dn}&{pk}", pw)


@pytest.mark.parametrize(
    "method,upper", [("hmacsha1", False), ("hmacsha256", True), ("hmacmd5", False)]
)
def test_registers_a_pre_registered_device_then_it_logs_in(platform, product, method, upper):
    pk, ps = product
    platform.registry.add_device(pk, DN)
    status, body = post(platform, form(pk, ps, method=method, upper=upper))
    assert status == 200 and body["code"] == 200 and body["message"] == "success"
    data = body["data"]
    assert (data["productKey"], data["deviceName"]) == (pk, DN) and len(data["deviceSecret"]) == 32
    assert data["deviceSecret"] == platform.registry.device_secret(pk, DN)
    c, rc = secret_login(platform, pk, DN, data["deviceSecret"])
    assert rc == 0
    c.publish(f"/{pk}/{DN}/user/update", {"v": 1}, qos=1)
    c.disconnect()
    regs = [e for e in events(platform, device_name=DN) if e["kind"] == "register"]
    assert [(e["cause"], e["detail"]) for e in regs] == [("register", "https")]


def test_refusals_answer_aliyun_style_codes_and_are_recorded(platform, product):
    pk, ps = product
    platform.registry.add_device(pk, DN)
    other_pk, other_ps = platform.registry.add_product(dynamic_registration=False)
    platform.registry.add_device(other_pk, DN)
    cases = {
        "bad_signature": form(pk, "wrong-secret-000"),
        "unknown_product": form("a1NoSuchProd", ps),
        "dynamic_registration_off": form(other_pk, other_ps),
        "unknown_device": form(pk, ps, dn="c0ffee00aa02"),
        "bad_params": {k: v for k, v in form(pk, ps).items() if k != "random"},
        "bad_signmethod": form(pk, ps, signMethod="hmacsha512"),
    }
    for cause, body in cases.items():
        status, answer = post(platform, body)
        assert status == 200 and answer["code"] == DEFAULT_HTTPS_CODES[cause][0], cause
        assert "data" not in answer
    refused = [e["cause"] for e in events(platform, kind="refuse")]
    assert sorted(refused) == sorted(cases)
    assert not [e for e in events(platform) if e["kind"] == "register"]


def test_codes_are_settings_and_other_paths_are_not_found(tmp_path):
    codes = {"bad_signature": [6289, "sign error"], "unknown_device": [6100, "no device"]}
    with running_platform(tmp_path / "p", https_codes=codes) as plat:
        pk, ps = plat.registry.add_product()
        assert post(plat, form(pk, "x" * 16))[1] == {"code": 6289, "message": "sign error"}
        assert post(plat, form(pk, ps))[1] == {"code": 6100, "message": "no device"}
        status, _ = post(plat, form(pk, ps), path="/auth/other")
        assert status == 404
        status, _ = post(plat, "", method="GET")
        assert status == 405

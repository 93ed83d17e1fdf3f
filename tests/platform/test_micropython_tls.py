# The firmware's runtime (the real MicroPython VM, mbedTLS) verifies the platform's chain and
# registers over it, under Aliyun's real host names.
import json
import subprocess
from pathlib import Path

import pytest

from host_tools.platform import pki
from host_tools.platform.testing import events, login, regnwl_login

SCRIPT = Path(__file__).with_name("mp_regnwl.py")


def _run(micropython, plat, host, der, login_args):
    return subprocess.run(
        [micropython, str(SCRIPT), str(plat.mqtts_port), host, str(der), *login_args],
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize(
    "host",
    [
        "{pk}.iot-as-mqtt.cn-shanghai.aliyuncs.com",
        "{pk}.iot-as-mqtt.ap-southeast-1.aliyuncs.com",
        "iot-06z00ax1o4tr9xt.mqtt.iothub.aliyuncs.com",
    ],
)
def test_micropython_verified_regnwl(micropython, platform, product, tmp_path, host):
    pk, ps = product
    der = tmp_path / "ca.der"
    der.write_bytes(pki.ca_der(platform.ca_path))
    dn = "30aea4c0ffee"
    r = _run(
        micropython, platform, host.format(pk=pk), der, regnwl_login(dn, pk, ps, style="luatos")
    )
    assert r.returncode == 0, r.stdout + r.stderr
    lines = dict(line.split(" ", 1) for line in r.stdout.splitlines())
    assert lines["CONNACK"] == "0" and lines["TOPIC"] == "/ext/regnwl"
    reg = json.loads(lines["PAYLOAD"])
    assert reg["deviceName"] == dn
    login(platform, reg).disconnect()


def test_micropython_refuses_wrong_host_and_unknown_ca(micropython, platform, product, tmp_path):
    pk, ps = product
    der = tmp_path / "ca.der"
    der.write_bytes(pki.ca_der(platform.ca_path))
    args = regnwl_login("30aea4c0ffee", pk, ps)
    r = _run(micropython, platform, "iot.example.com", der, args)
    assert r.returncode == 3 and "TLS_FAILED" in r.stdout
    other = tmp_path / "other"
    other_ca, _, _ = pki.ensure(other)
    der.write_bytes(pki.ca_der(other_ca))
    r = _run(micropython, platform, "localhost", der, args)
    assert r.returncode == 3 and "TLS_FAILED" in r.stdout
    assert not [e for e in events(platform) if e["kind"] == "register"]

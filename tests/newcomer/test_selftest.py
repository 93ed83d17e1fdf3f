# `zeroburn selftest` against a virtual board over its pty, with the real mpremote: every check
# a real board gets runs here too and must pass; the report holds no secret.
import json
import re

from host_tools.build.config_cmd import platform_config
from tests.newcomer.helpers import zeroburn

WIFI_PASSWORD = "wifi-secret-4711"


def test_selftest_on_a_virtual_board(tmp_path, platform, served):
    plat, pk, ps = platform
    link, flash = served
    # before the firmware is on the board: the board checks pass, the network ones say why not
    p = zeroburn("selftest", "--device", link, "--board", "virtual", "--json")
    assert p.returncode == 1, p.stderr
    early = json.loads(p.stdout)
    assert early["checks"]["nvs"]["ok"] and early["checks"]["rtc"]["ok"], early
    assert "zeroburn flash" in early["checks"]["tls"]["detail"]

    cfg = platform_config(plat.state_dir, pk, port=plat.mqtts_port)
    cfg["wifi_password"] = WIFI_PASSWORD
    path = tmp_path / "dev.config.json"
    path.write_text(json.dumps(cfg))
    p = zeroburn("flash", "--device", link, "--board", "virtual", "--config", path,
                 "--ca", plat.ca_path, "--timeout", "60", "-q")  # fmt: skip
    assert p.returncode == 0, p.stderr
    token = re.search(rb'"tok": "([^"]+)"', (flash / ".nvs" / "zeroburn" / "cred").read_bytes())

    p = zeroburn("selftest", "--device", link, "--board", "virtual", "--json")
    assert p.returncode == 0, p.stdout + p.stderr
    rep = json.loads(p.stdout)
    checks = rep["checks"]
    assert list(checks) == [
        "micropython", "chip", "nvs", "rtc", "wifi", "dns", "ntp", "tls", "heap", "watchdog"
    ]  # fmt: skip
    assert all(c["ok"] for c in checks.values()), checks
    # the ESP32 port's error codes, as the virtual board must give them
    assert checks["nvs"]["short"] == -4364 and checks["nvs"]["missing"] == -4354
    assert checks["chip"]["uid"] == "240ac45e1f07"
    assert checks["dns"]["ip"] == "127.0.0.1"
    assert (
        f"{pk}.iot-as-mqtt.cn-shanghai.aliyuncs.com:{plat.mqtts_port}" in checks["tls"]["detail"]
    )
    assert checks["heap"]["before"] > 0 and checks["heap"]["after"] > 0
    assert rep["reset"] is True  # the watchdog cannot be stopped: the board was reset

    # the pasteable text report: every check named, no secret anywhere
    p = zeroburn("selftest", "--device", link, "--board", "virtual")
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.count("PASS  ") == 10 and "FAIL" not in p.stdout
    assert "the board was reset at the end" in p.stdout
    for secret in (ps, WIFI_PASSWORD, token.group(1).decode()):
        assert secret not in p.stdout + p.stderr

    # the board is not the board named: refused before any check
    p = zeroburn("selftest", "--device", link, "--board", "esp32-s3-devkitc-1")
    assert p.returncode == 1 and "not an esp32s3" in p.stderr

# Pure firmware modules: the same checks under CPython and the MicroPython VM, plus CPython refs.
import hmac
import json
import os
import subprocess
import sys

import pytest

from host_tools.paths import FIRMWARE, ROOT
from tests.conftest import run_micropython
from tests.firmware.conftest import MP_PATH
from tests.firmware.cpy import Runtime

CHECKS = Runtime().load("fw_checks").names()


@pytest.fixture(scope="module")
def vm_results(micropython, tmp_path_factory):
    """All checks in one VM process (startup is cheap, but one run is cheaper)."""
    cwd = tmp_path_factory.mktemp("vm-checks")
    proc = run_micropython(
        micropython, "import fw_checks\nfw_checks.run_all()\n", path=MP_PATH, cwd=cwd
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = {}
    for line in proc.stdout.splitlines():
        status, name, *rest = line.split(" ", 2)
        results[name] = (status, rest)
    return results


@pytest.mark.parametrize("name", CHECKS)
def test_check_under_cpython(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    getattr(Runtime().load("fw_checks"), name)()


@pytest.mark.parametrize("name", CHECKS)
def test_check_under_micropython(name, vm_results):
    assert name in vm_results, "check did not run in the VM"
    status, rest = vm_results[name]
    assert status == "PASS", rest


def test_hmac_matches_cpython_hmac_for_random_keys_and_messages():
    sign = Runtime().load("zeroburn.sign")
    import hashlib

    for method, algo in (("hmacsha1", "sha1"), ("hmacsha256", "sha256"), ("hmacmd5", "md5")):
        for klen in (0, 1, 16, 63, 64, 65, 200):
            key = os.urandom(klen).hex()[:klen]
            msg = os.urandom(37)
            want = hmac.new(key.encode(), msg, getattr(hashlib, algo)).hexdigest()
            assert sign.hmac_hex(key, msg, method) == want


def test_config_imports_under_plain_cpython_and_lists_secrets(tmp_path):
    """The host tools import config.py with no shims at all."""
    code = (
        "import json, sys; sys.path.insert(0, %r)\n"
        "from zeroburn import config\n"
        "c = config.parse({'product_key': 'a1B2C3D4E5F', 'product_secret': 'p' * 16,"
        " 'instance_id': 'iot-x', 'wifi_ssid': 's', 'wifi_password': 'w' * 8})\n"
        "print(json.dumps([c.endpoint(), c.securemode, list(config.SECRET_FIELDS)]))\n"
    ) % str(FIRMWARE)
    proc = subprocess.run(
        [sys.executable, "-S", "-c", code], capture_output=True, text=True, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    endpoint, mode, secrets = json.loads(proc.stdout)
    assert endpoint == "iot-x.mqtt.iothub.aliyuncs.com" and mode == -2
    assert set(secrets) == {"product_secret", "wifi_password"}


def test_firmware_imports_only_the_allowed_modules():
    import ast

    allowed = {
        "time",
        "os",
        "gc",
        "json",
        "socket",
        "ssl",
        "select",
        "struct",
        "binascii",
        "hashlib",
        "errno",
        "micropython",
        "umqtt.simple",
        "zeroburn",
        "sys",  # app.unload(): dropping phase modules from sys.modules frees their code
        "otaboot",  # the OTA loader at the root (firmware/otaboot.py, docs/ota.md)
    }
    hardware = {"machine", "network", "esp32", "ntptime"}
    for path in (FIRMWARE / "zeroburn").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module]
            else:
                continue
            for name in names:
                top = name if name == "umqtt.simple" else name.split(".")[0]
                if path.name == "hw.py" and top in hardware:
                    continue
                assert top in allowed, f"{path.relative_to(ROOT)} imports {name}"

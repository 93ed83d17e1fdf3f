# `zeroburn platform`: serve in a subprocess, operate it from other processes on the same state.
import json
import signal
import subprocess
import sys
from pathlib import Path

from host_tools.platform.testing import Client, client_context, connwl_login, regnwl_login

DN = "esp32-0001"


def zb(*args, check=True):
    r = subprocess.run(
        [sys.executable, "-m", "host_tools.cli", "platform", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if check:
        assert r.returncode == 0, r.stderr
    return r


def test_serve_and_operate_while_running(tmp_path):
    state = str(tmp_path / "state")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "host_tools.cli",
            "platform",
            "serve",
            "--state",
            state,
            "--port",
            "0",
            "--tls-port",
            "0",
            "--linger",
            "1",
            "-v",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ready = json.loads(proc.stdout.readline())
        assert (
            set(ready) == {"mqtt", "mqtts", "https", "ca", "open_files_limit", "open_files_left"}
            and Path(ready["ca"]).exists()
        )
        out = json.loads(zb("product", "add", "--state", state, "--json").stdout)
        pk, ps = out["productKey"], out["productSecret"]
        assert len(pk) == 11 and len(ps) == 16
        tls = client_context(ready["ca"])
        with Client(ready["mqtts"], tls) as c:
            assert c.connect(*regnwl_login(DN, pk, ps)) == 0
            reg = json.loads(c.message("/ext/regnwl").payload)
        cid, user, pw = connwl_login(reg["clientId"], DN, pk, reg["deviceToken"])
        dev = Client(ready["mqtt"])
        assert dev.connect(cid, user, pw) == 0
        dev.publish(f"/{pk}/{DN}/user/update", b'{"id":1}', qos=1)
        devices = json.loads(zb("devices", "--state", state, "--json").stdout)
        assert devices[0]["device_name"] == DN and devices[0]["online"] is True
        assert devices[0]["client_ids"][0]["client_id"] == reg["clientId"]
        msgs = json.loads(zb("messages", "--state", state, "--device", DN, "--json").stdout)
        assert msgs[0]["payload"] == '{"id":1}'
        # Operator actions from another process take effect on the running server.
        zb("device", "disable", DN, "--state", state)
        assert dev.closed_by_server(timeout=5)
        with Client(ready["mqtt"]) as c:
            assert c.connect(cid, user, pw) == 4
        zb("device", "enable", DN, "--state", state)
        zb("product", "set", pk, "--dynamic-registration", "off", "--state", state)
        with Client(ready["mqtts"], tls) as c:
            assert c.connect(*regnwl_login("esp32-0002", pk, ps)) == 4
        zb("device", "keep", DN, reg["clientId"], "--state", state)
        zb("device", "clear", DN, "--state", state)
        with Client(ready["mqtt"]) as c:
            assert c.connect(cid, user, pw) == 4
        evs = json.loads(zb("events", "--state", state, "--device", DN, "--json").stdout)
        kinds = {e["kind"] for e in evs}
        assert {"register", "login", "kick", "refuse", "disconnect"} <= kinds
        text = zb("product", "list", "--state", state).stdout
        assert pk in text and ps not in text and "off" in text
        bad = zb("device", "delete", "nobody", "--state", state, check=False)
        assert bad.returncode == 1 and bad.stderr.startswith("zeroburn: no device nobody")
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    for secret in (ps, reg["deviceToken"]):
        assert secret not in err
    assert "refused" in err


def test_missing_state_is_a_clear_error(tmp_path):
    r = zb("devices", "--state", str(tmp_path / "none"), check=False)
    assert r.returncode == 1 and "no platform state" in r.stderr

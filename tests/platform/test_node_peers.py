# Aliyun's Node.js clients against the emulator, run by Node.js from tests/peers (pinned by its
# lockfile, installed by `make setup`): mqtt.js doing the seed article's flow, and Aliyun's own
# device SDK registering over HTTPS and logging in with its deviceSecret.
import json
import os
import shutil
import subprocess

import pytest

from host_tools.paths import ROOT
from host_tools.platform.testing import events

PEERS = ROOT / "tests" / "peers"


def node(script, *args, env=None):
    exe = shutil.which("node")
    if exe is None or not (PEERS / "node_modules").is_dir():
        pytest.fail("Node.js and tests/peers/node_modules are needed: run `make setup`")
    return subprocess.run(
        [exe, str(PEERS / script), *map(str, args)],
        cwd=PEERS,
        env=dict(os.environ, **(env or {})),
        capture_output=True,
        text=True,
        timeout=120,  # generous: a loaded machine; the scripts give up after 60 s themselves
    )


def test_mqttjs_runs_the_seed_flow_on_one_port(platform, product):
    """regnwl over mqtts and connwl over plain mqtt, both on the legacy-style port."""
    pk, ps = product
    dn = "seed0device1"
    r = node("seed_flow.js", platform.mqtt_port, platform.ca_path, pk, ps, dn, "cn-shanghai")
    assert r.returncode == 0, r.stdout + r.stderr
    out = json.loads(r.stdout)
    msgs = platform.registry.messages(device_name=dn)
    assert [m["topic"] for m in msgs] == [out["published"]]
    assert msgs[0]["payload"].startswith(b"sdk client ")
    kinds = [(e["kind"], e["cause"]) for e in events(platform, device_name=dn)]
    assert ("register", "regnwl") in kinds and ("login", "connwl") in kinds


@pytest.mark.parametrize("scheme", ["mqtt", "mqtts"])
def test_aliyun_device_sdk_registers_over_https_and_logs_in(platform, product, scheme):
    pk, ps = product
    dn = "sdk0device01"
    platform.registry.add_device(pk, dn)  # "one type one secret with pre-registration"
    port = platform.mqtt_port
    r = node(
        "device_sdk.js",
        platform.https_port,
        f"{scheme}://127.0.0.1:{port}",
        pk,
        ps,
        dn,
        env={"NODE_EXTRA_CA_CERTS": platform.ca_path},
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["registered"] == dn
    topic = f"/{pk}/{dn}/user/update"
    msgs = platform.registry.messages(device_name=dn, topic=topic)
    assert [json.loads(m["payload"]) for m in msgs] == [{"sdk": "aliyun-iot-device-sdk"}]
    kinds = [(e["kind"], e["cause"], e["detail"]) for e in events(platform, device_name=dn)]
    assert ("register", "register", "https") in kinds
    assert ("login", "secret", None) in kinds  # its client-id block has "\n        " in it

# Aliyun's own Python device SDK (aliyun-iot-linkkit 1.2.13) answers the emulator's operator
# commands (`zeroburn platform property set | service invoke [--sync] | rrpc`) as it answers
# Aliyun's console: its thing model set up from a TSL file as the console exports it, the CLI run
# as its own process against the running platform's state file. linkkit is the spec here: where
# it and the emulator disagree, the emulator is wrong (docs/downlink-outbox.md section 4).
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from linkkit import linkkit

from host_tools.paths import ROOT
from host_tools.platform.testing import events

DN = "sdk-thing-01"
WAIT = 30  # generous: a loaded machine; every wait below fails the test when it runs out


def _tsl(pk):
    """A thing model as the console's "export TSL" writes it: property LightSwitch (bool, rw),
    the asynchronous service Blink and the synchronous service BlinkNow."""
    light = {
        "identifier": "LightSwitch",
        "name": "LightSwitch",
        "accessMode": "rw",
        "required": False,
        "dataType": {"type": "bool", "specs": {"0": "off", "1": "on"}},
    }
    times = {
        "identifier": "times",
        "name": "times",
        "dataType": {"type": "int", "specs": {"min": "1", "max": "10", "step": "1"}},
    }
    blinked = {
        "identifier": "blinked",
        "name": "blinked",
        "dataType": {"type": "int", "specs": {"min": "0", "max": "20", "step": "1"}},
    }

    def service(ident, call_type):
        return {
            "identifier": ident,
            "name": ident,
            "required": False,
            "callType": call_type,
            "method": f"thing.service.{ident}",
            "inputData": [times],
            "outputData": [blinked],
        }

    return {
        "schema": "https://iotx-tsl.oss-ap-southeast-1.aliyuncs.com/schema.json",
        "profile": {"version": "1.0", "productKey": pk},
        "properties": [light],
        "events": [
            {
                "identifier": "post",
                "name": "post",
                "type": "info",
                "required": True,
                "desc": "property post",
                "method": "thing.event.property.post",
                "outputData": [light],
            }
        ],
        "services": [
            {
                "identifier": "set",
                "name": "set",
                "required": True,
                "callType": "async",
                "desc": "property set",
                "method": "thing.service.property.set",
                "inputData": [light],
                "outputData": [],
            },
            {
                "identifier": "get",
                "name": "get",
                "required": True,
                "callType": "async",
                "desc": "property get",
                "method": "thing.service.property.get",
                "inputData": ["LightSwitch"],
                "outputData": [light],
            },
            service("Blink", "async"),
            service("BlinkNow", "sync"),
        ],
    }


class Lamp:
    """linkkit with a thing model, answering as an application on it would. Every callback
    records what the SDK handed it in `calls` (a queue the test reads with a deadline)."""

    def __init__(self, platform, pk, secret, tsl_file):
        self.calls = queue.Queue()
        self.ready = threading.Event()
        self.granted = queue.Queue()
        kit = linkkit.LinkKit(
            host_name="cn-shanghai", product_key=pk, device_name=DN, device_secret=secret
        )
        kit.config_mqtt(
            port=platform.mqtts_port,
            secure="TLS",
            cadata=Path(platform.ca_path).read_text(),
            endpoint="localhost",  # the server certificate names localhost; the host is verified
            auto_reconnect_max_sec=2,
        )
        assert kit.thing_setup(str(tsl_file)) == 0
        kit.on_thing_enable = lambda userdata: self.ready.set()
        kit.on_thing_prop_changed = self.prop_changed
        kit.on_thing_call_service = self.call_service
        kit.on_topic_rrpc_message = self.rrpc
        kit.on_topic_message = self.message
        kit.on_subscribe_topic = lambda mid, granted, userdata: self.granted.put(granted)
        self.kit = kit

    def prop_changed(self, params, userdata):
        self.calls.put(("prop", params))

    def call_service(self, identifier, request_id, params, userdata):
        self.calls.put(("service", identifier, request_id, params))
        rc = self.kit.thing_answer_service(
            identifier, request_id, 200, {"blinked": 2 * params.get("times", 1)}
        )
        self.calls.put(("answered", rc))

    def rrpc(self, rrpc_id, topic, payload, qos, userdata):
        self.calls.put(("rrpc", rrpc_id, topic, bytes(payload)))
        rc, _ = self.kit.thing_answer_rrpc(rrpc_id, b"pong:" + bytes(payload))
        self.calls.put(("answered", rc))

    def message(self, topic, payload, qos, userdata):
        """System RRPC (/sys/.../rrpc/request/<id>): linkkit hands it over as a plain message;
        Aliyun's RRPC guide answers it on .../rrpc/response/<id>."""
        self.calls.put(("message", topic, bytes(payload)))
        if "/rrpc/request/" in topic:
            rc, _ = self.kit.publish_topic(
                topic.replace("/rrpc/request/", "/rrpc/response/"), b"pong:" + payload, qos=0
            )
            self.calls.put(("answered", rc))

    def granted_next(self):
        try:
            return self.granted.get(timeout=WAIT)
        except queue.Empty:
            pytest.fail("no SUBACK for linkkit's subscription")

    def next(self):
        try:
            return self.calls.get(timeout=WAIT)
        except queue.Empty:
            pytest.fail("linkkit's callback was not called")


@pytest.fixture
def lamp(platform, tmp_path):
    pk, _ = platform.registry.add_product()
    secret = platform.registry.add_device(pk, DN)
    tsl_file = tmp_path / "tsl.json"
    tsl_file.write_text(json.dumps(_tsl(pk), ensure_ascii=False, indent=2))
    lamp = Lamp(platform, pk, secret, tsl_file)
    lamp.pk = pk
    lamp.kit.connect_async()
    try:
        assert lamp.ready.wait(WAIT), "linkkit did not log in and enable its thing model"
        yield lamp
    finally:
        lamp.kit.destroy()


@pytest.fixture
def cli(platform):
    """cli(*args) -> (exit status, parsed --json output): `zeroburn platform ...` as a process
    of its own, reaching the running platform through its state file only."""

    def run(*args):
        cmd = [sys.executable, "-m", "host_tools.cli", "platform", *args]
        cmd += ["--state", str(platform.state_dir), "--json", "--timeout", "20"]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)
        lines = p.stdout.strip().splitlines()
        assert lines, p.stderr
        return p.returncode, json.loads(lines[-1])

    return run


def test_property_set_reaches_on_thing_prop_changed(platform, lamp, cli):
    rc, out = cli("property", "set", DN, '{"LightSwitch": 1}')
    assert lamp.next() == ("prop", {"LightSwitch": 1})
    assert (rc, out["state"], out["rrpcCode"]) == (0, "answered", "SUCCESS"), out
    assert out["topic"] == f"/sys/{lamp.pk}/{DN}/thing/service/property/set"
    assert out["reply"]["code"] == 200 and out["reply"]["data"] == {}
    # linkkit echoes the request's id (a string, as the console sends it) in its set_reply
    assert out["reply"]["id"] == str(out["id"])


def test_async_service_answered_by_thing_answer_service(platform, lamp, cli):
    rc, out = cli("service", "invoke", DN, "Blink", '{"times": 3}')
    kind, identifier, request_id, params = lamp.next()
    assert (kind, identifier, params) == ("service", "Blink", {"times": 3})
    assert lamp.next() == ("answered", 0)
    assert (rc, out["state"]) == (0, "answered"), out
    assert out["topic"] == f"/sys/{lamp.pk}/{DN}/thing/service/Blink"
    assert out["reply"] == {"id": request_id, "code": 200, "data": {"blinked": 6}}


def test_sync_service_over_rrpc_answered_on_the_request_topic(platform, lamp, cli):
    rc, out = cli("service", "invoke", DN, "BlinkNow", '{"times": 2}', "--sync")
    kind, identifier, request_id, params = lamp.next()
    assert (kind, identifier, params) == ("service", "BlinkNow", {"times": 2})
    assert lamp.next() == ("answered", 0)
    assert (rc, out["state"], out["rrpcCode"]) == (0, "answered", "SUCCESS"), out
    assert out["topic"].startswith("/ext/rrpc/")
    assert out["topic"].endswith(f"/sys/{lamp.pk}/{DN}/thing/service/BlinkNow")
    assert out["reply"] == {"id": request_id, "code": 200, "data": {"blinked": 4}}
    # linkkit answered on the very topic the request came on (its rrpc item's topic)
    sent = [e for e in events(platform, device_name=DN) if e["kind"] == "service_sync"]
    assert sent and sent[0]["detail"].startswith(out["topic"] + " ")


def test_custom_topic_rrpc_reaches_on_topic_rrpc_message(platform, lamp, cli):
    own = f"/{lamp.pk}/{DN}/user/get"
    # linkkit subscribes /ext/rrpc/+/<topic>, as Aliyun's RRPC guide says, and the cloud grants
    # it. linkkit offers no callback for that SUBACK (it has no on_subscribe_rrpc_topic setter):
    # a subscription after it, answered in order on the same connection, shows it was handled.
    assert lamp.kit.subscribe_rrpc_topic(own)[0] == 0
    assert lamp.kit.subscribe_topic(own, qos=0)[0] == 0
    assert lamp.granted_next() == (0,)
    refused = [e["detail"] for e in events(platform, device_name=DN, kind="forbidden")]
    assert refused == []
    rc, out = cli("rrpc", DN, "ping", "--topic", "user/get")
    kind, rrpc_id, topic, payload = lamp.next()
    assert (kind, topic, payload) == ("rrpc", f"/ext/rrpc/{rrpc_id}{own}", b"ping")
    assert lamp.next() == ("answered", 0)
    assert (rc, out["state"], out["rrpcCode"]) == (0, "answered", "SUCCESS"), out
    assert out["topic"] == topic and out["reply"] == "pong:ping"


def test_system_rrpc_reaches_on_topic_message(platform, lamp, cli):
    request = f"/sys/{lamp.pk}/{DN}/rrpc/request/+"
    assert lamp.kit.subscribe_topic(request, qos=0)[0] == 0
    assert lamp.granted_next() == (0,)
    rc, out = cli("rrpc", DN, "ping")
    kind, topic, payload = lamp.next()
    assert (kind, payload) == ("message", b"ping")
    assert topic.startswith(f"/sys/{lamp.pk}/{DN}/rrpc/request/")
    assert lamp.next() == ("answered", 0)
    assert (rc, out["state"], out["rrpcCode"]) == (0, "answered", "SUCCESS"), out
    assert out["topic"] == topic and out["reply"] == "pong:ping"


# ---- Aliyun's Node.js device SDK (aliyun-iot-device-sdk 1.0.1, tests/peers/thing_sdk.js)


@pytest.fixture
def node_lamp(platform):
    """The Node.js SDK logged in as a thing-model device: (process, next_line(), pk)."""
    exe = shutil.which("node")
    peers = ROOT / "tests" / "peers"
    if exe is None or not (peers / "node_modules").is_dir():
        pytest.fail("Node.js and tests/peers/node_modules are needed: run `make setup`")
    pk, _ = platform.registry.add_product()
    secret = platform.registry.add_device(pk, DN)
    url = f"mqtts://localhost:{platform.mqtts_port}"
    env = dict(os.environ, NODE_EXTRA_CA_CERTS=str(platform.ca_path))
    proc = subprocess.Popen(
        [exe, str(peers / "thing_sdk.js"), url, pk, DN, secret],
        cwd=peers,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True).start()

    def next_line():
        try:
            return json.loads(lines.get(timeout=WAIT))
        except queue.Empty:
            proc.kill()
            pytest.fail("the Node.js SDK said nothing: " + proc.stderr.read())

    try:
        yield proc, next_line, pk
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_node_sdk_answers_property_set_service_and_rrpc(platform, node_lamp, cli):
    proc, next_line, pk = node_lamp
    ready = next_line()
    assert ready == {"ready": [[f"/sys/{pk}/{DN}/rrpc/request/+", 0]]}, ready
    # what the SDK subscribes to on connect (answered before its last one) is granted: among it
    # /shadow/get/<pk>/<dn>, the device shadow's downlink topic
    refused = [e["detail"] for e in events(platform, device_name=DN, kind="forbidden")]
    assert refused == []

    rc, out = cli("property", "set", DN, '{"LightSwitch": 0}')
    assert next_line() == {"call": "set", "id": str(out["id"]), "params": {"LightSwitch": 0}}
    assert (rc, out["state"]) == (0, "answered"), out
    assert out["reply"] == {"id": str(out["id"]), "code": 200, "data": {}}

    rc, out = cli("service", "invoke", DN, "Blink", '{"times": 4}')
    assert next_line() == {"call": "Blink", "id": str(out["id"]), "params": {"times": 4}}
    assert (rc, out["state"]) == (0, "answered"), out
    assert out["reply"] == {"id": str(out["id"]), "code": 200, "data": {"blinked": 8}}

    rc, out = cli("rrpc", DN, "ping")
    line = next_line()
    assert (line["call"], line["payload"]) == ("rrpc", "ping") and line["topic"] == out["topic"]
    assert (rc, out["state"], out["rrpcCode"]) == (0, "answered", "SUCCESS"), out
    assert out["reply"] == "pong:ping"


def test_rrpc_and_sdk_subscriptions_stay_within_the_device():
    """What the SDKs subscribe is granted for the device's own topics only."""
    from host_tools.platform.server import DEFAULT_CUSTOM, can_subscribe

    def ok(f):
        return can_subscribe("pk1", "dn1", f, DEFAULT_CUSTOM)

    assert ok("/ext/rrpc/+/pk1/dn1/user/get") and ok("/ext/rrpc/+/pk1/dn1/user/update")
    assert ok("/ext/rrpc/+/sys/pk1/dn1/thing/service/+") and ok("/shadow/get/pk1/dn1")
    assert ok("/ext/session/pk1/dn1/combine/login_reply")
    for f in (
        "/ext/rrpc/+/pk2/dn2/user/get",  # another device's topic
        "/ext/rrpc/+/pk1/dn1/user/nope",  # no such topic class
        "/ext/rrpc/+/#",
        "/ext/rrpc/+",
        "/shadow/get/pk2/dn2",
        "/ext/session/pk2/dn2/combine/login_reply",
    ):
        assert not ok(f), f

# The cloud talks to a device: property set, service calls (asynchronous and over RRPC), raw
# RRPC, on virtual boards (both runtimes) running a real application, through the operator CLI.
import json
import time

import pytest

from tests.integration.conftest import RUNTIMES

pytestmark = pytest.mark.parametrize("runtime", RUNTIMES)


def test_property_set_is_answered_and_reported(runtime, plat, app_board, cli):
    board = app_board(runtime)
    dn = board.name
    rc, out = cli("property", "set", dn, '{"LightSwitch": 1}')
    assert rc == 0, out
    assert out["state"] == "answered" and out["rrpcCode"] == "SUCCESS"
    assert out["reply"]["code"] == 200 and out["reply"]["id"] == str(out["id"])
    assert out["topic"] == f"/sys/{plat.product_key}/{dn}/thing/service/property/set"

    # the device reported the new value, and the console (platform devices) shows it
    def reported():
        rc, devices = cli("devices")
        props = {d["device_name"]: d["properties"] for d in devices}[dn]
        return props.get("LightSwitch", {}).get("value") == 1

    deadline = time.monotonic() + 30
    while not reported():
        assert time.monotonic() < deadline, "LightSwitch=1 never reported"
        time.sleep(0.2)
    # refused: a value the setter rejects, an unknown and a read-only property (460, as the
    # Link Kit SDK's IOTX_DM_ERR_CODE_REQUEST_PARAMS_ERROR); nothing changes
    for params in ('{"LightSwitch": 7}', '{"Nope": 1}', '{"Model": "x"}'):
        rc, out = cli("property", "set", dn, params)
        assert rc == 0 and out["reply"]["code"] == 460, (params, out)
        assert out["reply"]["message"]
    kinds = [e["kind"] for e in plat.registry.events(device_name=dn)]
    assert kinds.count("property_set") >= 4 and "downlink_reply" in kinds


def test_service_call_returns_its_output_async_and_sync(runtime, plat, app_board, cli):
    board = app_board(runtime)
    dn = board.name
    rc, out = cli("service", "invoke", dn, "Blink", '{"times": 3}')
    assert rc == 0, out
    assert out["reply"]["code"] == 200 and out["reply"]["data"] == {"blinked": 6}
    assert out["topic"].endswith("/thing/service/Blink")
    rc, out = cli("service", "invoke", dn, "Blink", '{"times": 4}', "--sync")
    assert rc == 0, out
    assert out["reply"]["data"] == {"blinked": 8}
    assert out["topic"].startswith("/ext/rrpc/") and out["topic"].endswith("/thing/service/Blink")
    rc, out = cli("service", "invoke", dn, "NoSuch")
    assert rc == 0 and out["reply"]["code"] == 460
    # a large answer goes out whole
    rc, out = cli("service", "invoke", dn, "Big", '{"n": 4000}')
    assert rc == 0, out
    assert out["reply"]["code"] == 200, out["reply"]
    assert out["reply"]["data"]["blob"] == "x" * 4000
    # one too large for the heap (the VM) or for a reply (16 KiB, CPython) is an error answer
    rc, out = cli("service", "invoke", dn, "Big", '{"n": 100000}')
    assert rc == 0 and out["reply"]["code"] == 400, out
    assert "MemoryError" in out["reply"]["message"] or "too large" in out["reply"]["message"]
    rc, out = cli("service", "invoke", dn, "Blink", '{"times": 5}')
    assert rc == 0 and out["reply"]["data"] == {"blinked": 10}


def test_a_handler_that_raises_gets_an_error_reply_and_the_board_carries_on(
    runtime, plat, app_board, cli
):
    board = app_board(runtime)
    dn = board.name
    rc, out = cli("service", "invoke", dn, "Boom")
    assert rc == 0, out
    assert out["reply"]["code"] == 400 and "RuntimeError: boom" in out["reply"]["message"]
    mark = len(board.lines)
    board.wait_for(r"\[tel\] acked #", timeout=30, start=mark)  # telemetry goes on
    rc, out = cli("service", "invoke", dn, "Blink", '{"times": 1}')
    assert rc == 0 and out["reply"]["data"] == {"blinked": 2}
    assert not any("Traceback" in line for line in board.lines)


def test_rrpc_answered_in_time_and_too_late(runtime, plat, app_board, cli):
    board = app_board(runtime)
    dn = board.name
    rc, out = cli("rrpc", dn, "ping")
    assert rc == 0, out
    assert out["reply"] == "pong:ping" and out["rrpcCode"] == "SUCCESS"
    assert f"/sys/{plat.product_key}/{dn}/rrpc/request/" in out["topic"]
    rc, out = cli("rrpc", dn, "hello", "--topic", "user/get")  # custom-topic RRPC
    assert rc == 0 and out["reply"] == "pong:hello", out
    assert out["topic"].startswith("/ext/rrpc/") and out["topic"].endswith(f"/{dn}/user/get")
    # the handler takes 3 s, the cloud waits 1 s: TIMEOUT for the caller, the late answer is
    # recorded, and the device stays online
    rc, out = cli("rrpc", dn, "sleep3000", "--timeout", "1")
    assert rc == 1 and out["state"] == "timeout" and out["rrpcCode"] == "TIMEOUT", out
    deadline = time.monotonic() + 30
    while True:
        late = [
            e
            for e in plat.registry.events(device_name=dn, kind="downlink_reply")
            if e["cause"] == "late"
        ]
        if late:
            break
        assert time.monotonic() < deadline, "the late answer never arrived"
        time.sleep(0.2)
    assert "pong:sleep3000" in late[0]["detail"]
    rc, out = cli("rrpc", dn, "again")
    assert rc == 0 and out["reply"] == "pong:again"


def test_a_device_that_never_answers_and_an_offline_one(runtime, plat, app_board, cli):
    board = app_board(runtime)
    dn = board.name
    plat.mute_replies(dn)
    rc, out = cli("property", "set", dn, '{"LightSwitch": 1}', "--timeout", "2")
    assert rc == 1 and out["state"] == "timeout", out
    plat.mute_replies(dn, False)
    rc, out = cli("property", "set", dn, '{"LightSwitch": 0}')
    assert rc == 0 and out["reply"]["code"] == 200
    board.stop()
    deadline = time.monotonic() + 30
    while plat.registry.device(plat.product_key, dn)["online"]:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    rc, out = cli("rrpc", dn, "ping")
    assert rc == 1 and out["state"] == "offline" and out["rrpcCode"] == "OFFLINE", out


def test_application_event_is_posted_and_answered(runtime, plat, app_board):
    board = app_board(runtime)
    dn = board.name
    (board.flash / "event").write_text("")
    n = int(board.wait_for(r"\[test\] event #(\d+)", timeout=30).group(1))
    board.wait_for(r"\[tel\] acked #%d\b" % n, timeout=30)
    topic = f"/sys/{plat.product_key}/{dn}/thing/event/Tick/post"
    msgs = plat.registry.messages(device_name=dn, topic=topic)
    body = json.loads(msgs[-1]["payload"])
    assert body["id"] == str(n) and body["method"] == "thing.event.Tick.post"
    assert body["params"]["value"] == {"lamp": 0} and body["params"]["time"] > 0

# The firmware end to end: virtual boards (MicroPython VM and CPython) against the platform
# emulator over verified TLS, seen through the platform's SQLite and the board's console.
import json
import time

import pytest

from tests.integration.conftest import RUNTIMES, registrations, samples

pytestmark = pytest.mark.parametrize("runtime", RUNTIMES)


def wait_until(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def test_first_boot_registers_and_sends_telemetry(runtime, plat, make_board):
    board = make_board(runtime)
    dn = board.name
    board.wait_for(r"\[reg\] registered as " + dn, timeout=60)
    board.wait_for(r"\[mqtt\] online as " + dn, timeout=30)
    wait_until(lambda: len(samples(plat, dn)) >= 3, 30, "three samples")
    got = samples(plat, dn)
    assert [s["id"] for s in got[:3]] == [1, 2, 3]
    assert all({"id", "ts", "uptime_s", "heap_free"} <= set(s) for s in got)
    assert len(registrations(plat, dn)) == 1
    device = plat.registry.device(plat.product_key, dn)
    assert len(device["client_ids"]) == 1
    # Secrets never reach the console.
    token = plat.registry.client_ids(plat.product_key, dn)
    console = "\n".join(board.lines)
    assert plat.product_secret not in console
    for entry in token:
        if isinstance(entry, dict) and entry.get("token"):
            assert entry["token"] not in console


def test_reboot_reuses_the_stored_token(runtime, plat, make_board):
    board = make_board(runtime)
    dn = board.name
    board.wait_for(r"\[tel\] acked #2", timeout=60)
    mark = len(board.lines)
    board.reset()
    board.wait_for(r"\[cred\] token loaded for " + dn, timeout=30, start=mark)
    board.wait_for(r"\[mqtt\] online as " + dn, timeout=30, start=mark)
    board.wait_for(r"\[tel\] acked", timeout=30, start=mark)
    assert len(registrations(plat, dn)) == 1


def test_wrong_product_secret_backs_off_instead_of_hammering(runtime, plat, make_board):
    board = make_board(runtime, product_secret="0123456789abcdef", reg_backoff_s=300)
    dn = board.name
    board.wait_for(r"\[reg\] W: refused, CONNACK 4", timeout=60)
    board.wait_for(r"\[app\] retry in \d+ s", timeout=10)
    time.sleep(4)  # a window in which a hammering board would try many times
    refusals = [
        e for e in plat.registry.events(kind="refuse") if dn in (e.get("device_name") or "")
    ]
    assert len(refusals) == 1, refusals
    assert board.count(r"\[reg\] registering") == 1
    assert registrations(plat, dn) == []


def test_token_cleared_by_operator_leads_to_exactly_one_reregistration(runtime, plat, make_board):
    board = make_board(runtime, max_connwl_refusals=2)
    dn = board.name
    board.wait_for(r"\[tel\] acked #1", timeout=60)
    mark = len(board.lines)
    plat.registry.clear_device(plat.product_key, dn)
    plat.drop(dn)
    board.wait_for(r"\[cred\] W: token revoked", timeout=60, start=mark)
    board.wait_for(r"\[reg\] registered as " + dn, timeout=60, start=mark)
    board.wait_for(r"\[mqtt\] online as " + dn, timeout=30, start=mark)
    time.sleep(1)
    assert len(registrations(plat, dn)) == 2
    assert board.count(r"\[reg\] registered as") == 2


def test_platform_outage_loses_nothing_and_keeps_order(runtime, plat, make_board):
    board = make_board(runtime, buffer_max=50)
    dn = board.name
    board.wait_for(r"\[tel\] acked #2", timeout=60)
    plat.stop_listening(drop_connections=True)
    mark = len(board.lines)
    board.wait_for(r"\[net\] W:", timeout=30, start=mark)
    time.sleep(4)  # samples pile up in the offline buffer
    plat.start_listening()
    board.wait_for(r"\[mqtt\] online as", timeout=60, start=mark)
    taken = wait_until(
        lambda: [s["id"] for s in samples(plat, dn)],
        5,
        "samples",
    )
    last_taken = max(taken)
    wait_until(lambda: len({s["id"] for s in samples(plat, dn)}) >= last_taken + 3, 60, "catch-up")
    ids = [s["id"] for s in samples(plat, dn)]
    unique = sorted(set(ids))
    assert unique == list(range(1, unique[-1] + 1)), "a sample was lost"
    # QoS 1 allows a duplicate of a message whose PUBACK was lost, never reordering of firsts.
    firsts = [i for n, i in enumerate(ids) if i not in ids[:n]]
    assert firsts == unique
    stamps = {s["id"]: s["ts"] for s in samples(plat, dn)}
    assert all(stamps[a] <= stamps[b] for a, b in zip(unique, unique[1:], strict=False))


@pytest.mark.parametrize("point", ["nvs_entry", "nvs_commit", "file_write", "file_close"])
def test_power_cut_during_credential_write_leaves_a_bootable_board(
    runtime, point, plat, make_board
):
    board = make_board(runtime, start=False)
    dn = board.name
    board.power_cut(at=point, off=0.2)
    board.start()
    board.wait_for(r"\[mqtt\] online as " + dn, timeout=90)
    board.wait_for(r"\[tel\] acked", timeout=30)
    # At most the interrupted registration and the one after it: never a loop.
    assert 1 <= len(registrations(plat, dn)) <= 2
    assert not any("Traceback" in line for line in board.lines)


@pytest.mark.parametrize(
    "reply",
    [
        b"not json",
        b'{"productKey":"x"}',
        lambda body: json.dumps(dict(body, deviceName="someone-else")).encode(),
        lambda body: json.dumps(dict(body, deviceToken=7)).encode(),
        b'{"deviceToken":"' + b"A" * 20000 + b'"}',
    ],
    ids=["not-json", "missing-fields", "wrong-device", "non-string", "huge"],
)
def test_malformed_registration_reply_stores_nothing(runtime, reply, plat, make_board):
    plat.corrupt_registration_reply(reply)
    board = make_board(runtime)
    board.wait_for(r"\[reg\] W: (reply rejected|no usable /ext/regnwl reply)", timeout=60)
    board.wait_for(r"\[app\] retry in \d+ s", timeout=10)
    assert board.count(r"\[reg\] registered as") == 0
    # Nothing was persisted: after a reset the board still has no token.
    mark = len(board.lines)
    board.reset()
    board.wait_for(r"\[cred\] no token for " + board.name, timeout=30, start=mark)


HANGING_MAIN = """# main.py with a user sensor that hangs once the file 'hang' exists
import os
import time

from zeroburn import app


def sensors():
    try:
        os.stat("hang")
    except OSError:
        return {"ok": 1}
    print("[test] sensor hangs")
    while True:
        time.sleep_ms(500)


app.main(sensors=sensors)
"""


def test_watchdog_resets_a_hung_board_which_then_carries_on(runtime, plat, make_board):
    board = make_board(runtime, start=False, wdt_s=20)
    (board.flash / "main.py").write_text(HANGING_MAIN)
    board.start()
    dn = board.name
    board.wait_for(r"\[tel\] acked #1", timeout=60)
    (board.flash / "hang").write_text("")
    board.wait_for(r"\[test\] sensor hangs", timeout=30)
    (board.flash / "hang").unlink()
    mark = len(board.lines)
    board.wait_for(r"\[cred\] token loaded for " + dn, timeout=60, start=mark)
    board.wait_for(r"\[tel\] acked", timeout=30, start=mark)
    assert board.reset_causes[-1] == 3  # machine.WDT_RESET
    assert len(registrations(plat, dn)) == 1

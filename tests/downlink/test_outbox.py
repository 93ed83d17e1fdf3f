# The durable outbox on virtual boards (both runtimes): 20 samples queued offline survive
# machine.reset(), a watchdog reset and (with the flash journal) a power cut; each then arrives
# once, in order, with its original timestamp, and ids stay unique across the cold boot.
import json
import struct
import time

import pytest

from tests.integration.conftest import RUNTIMES, samples

pytestmark = pytest.mark.parametrize("runtime", RUNTIMES)


def rtc_queue(board):
    """The queue the board's RTC memory holds now: [(id, payload bytes)] (telemetry.Buffer.rtc()'s
    format, read independently here), or [] when it holds no valid image."""
    try:
        blob = (board.ctl / "rtc_memory").read_bytes()
    except FileNotFoundError:
        return []
    if len(blob) < 13 or blob[:2] != b"ZQ":
        return []
    (hl,) = struct.unpack_from(">H", blob, 3)
    i, out = 5 + hl, []
    while i < len(blob) - 4:
        n, tl, pl = struct.unpack_from(">IBH", blob, i)
        i += 7 + tl
        out.append((n, blob[i : i + pl]))
        i += pl
    return out


def wait_until(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


def queue_offline(plat, board, count):
    """Cut the platform off and wait until `count` samples wait in RTC memory; returns them."""
    plat.stop_listening(drop_connections=True)
    return wait_until(
        lambda: (q := rtc_queue(board)) and len(q) >= count and q, 90, f"{count} queued samples"
    )


def delivered(plat, dn, want):
    """Wait until every id in want was stored by the platform; returns all samples in order."""
    return wait_until(
        lambda: (s := samples(plat, dn)) and want <= {x["id"] for x in s} and s,
        90,
        "the queued samples",
    )


def test_machine_reset_and_watchdog_reset_lose_no_queued_sample(runtime, plat, app_board):
    board = app_board(runtime, wdt_s=20, buffer_max=60)
    dn = board.name
    board.wait_for(r"\[tel\] acked #2\b", timeout=60)
    queued = queue_offline(plat, board, 20)
    mark = len(board.lines)
    (board.flash / "reset").write_text("")  # the application calls machine.reset()
    board.wait_for(r"\[test\] machine.reset\(\)", timeout=30, start=mark)
    line = board.wait_for(r"\[tel\] (\d+) samples restored from RTC memory", 60, start=mark)
    assert int(line.group(1)) >= len(queued)
    more = wait_until(lambda: (q := rtc_queue(board)) and len(q) >= len(queued) + 5 and q, 60, "")
    mark = len(board.lines)
    (board.flash / "hang").write_text("")  # the application hangs: the watchdog resets
    board.wait_for(r"\[test\] sensor hangs", timeout=30, start=mark)
    board.wait_for(r"\[tel\] \d+ samples restored from RTC memory", timeout=90, start=mark)
    assert board.reset_causes[-1] == 3  # machine.WDT_RESET
    plat.start_listening()
    want = {n for n, _ in more}
    got = delivered(plat, dn, want)
    ids = [s["id"] for s in got]
    # every queued sample arrived, exactly once, oldest first, as it was taken (timestamp)
    assert all(ids.count(n) == 1 for n in want), ids
    firsts = [n for k, n in enumerate(ids) if n not in ids[:k]]
    assert firsts == sorted(firsts)
    by_id = {s["id"]: s for s in got}
    for n, payload in more:
        assert by_id[n] == json.loads(payload)
    # RTC memory kept the counter too: no id was skipped or repeated across both resets
    assert sorted(set(ids)) == list(range(1, max(ids) + 1))


def test_power_cut_with_the_flash_journal_loses_no_journaled_sample(runtime, plat, app_board):
    board = app_board(runtime, buffer_max=60, journal_s=1)
    dn = board.name
    board.wait_for(r"\[tel\] acked #2\b", timeout=60)
    queued = queue_offline(plat, board, 20)
    last = queued[-1][0]
    mark = len(board.lines)
    board.wait_for(
        r"\[tel\] journaled #(%s)\b" % "|".join(str(n) for n in range(last, last + 30)), 30
    )
    journaled = max(int(m.split("#")[1]) for m in board.lines if m.startswith("[tel] journaled #"))
    before = {n: p for n, p in rtc_queue(board) if n <= journaled}
    board.power_cut(off=0.5)
    board.wait_for(r"\[board\] power cut", timeout=30, start=mark)
    board.wait_for(r"\[tel\] \d+ queued restored from the flash journal", timeout=90, start=mark)
    plat.start_listening()
    got = delivered(plat, dn, set(before))
    ids = [s["id"] for s in got]
    assert all(ids.count(n) == 1 for n in before), ids
    by_id = {s["id"]: s for s in got}
    for n, payload in before.items():
        assert by_id[n] == json.loads(payload)  # the original timestamp and values
    # after the cold boot ids go on above every id handed out before it: unique, in order
    top = max(n for n, _ in rtc_queue(board) or [(0, b"")])
    wait_until(lambda: max(s["id"] for s in samples(plat, dn)) > journaled + 1, 60, "new samples")
    new = [s["id"] for s in samples(plat, dn) if s["id"] > journaled]
    pre_cut_max = journaled
    assert all(n > pre_cut_max for n in new) and len(set(ids)) == len(set(ids))
    firsts = [n for k, n in enumerate(ids) if n not in ids[:k]]
    assert firsts == sorted(firsts), firsts
    assert top >= 0

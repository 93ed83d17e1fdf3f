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
    """The queue the board's RTC memory holds now: [(id, payload bytes)] (telemetry.Buffer.dump()'s
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
    # the application calls machine.reset() at its next sample, and after that boot it hangs
    # at its first sample, so the watchdog resets the board: two resets, nothing sampled between
    (board.flash / "hang").write_text("")
    (board.flash / "reset").write_text("")
    board.wait_for(r"\[test\] machine.reset\(\)", timeout=30, start=mark)
    m = board.wait_for(r"\[tel\] (\d+) samples restored from RTC memory", 60, start=mark)
    assert int(m.group(1)) >= 20
    mark = len(board.lines)
    board.wait_for(r"\[test\] sensor hangs", timeout=30, start=mark)
    plat.start_listening()  # the board is hung: it meets the platform after the watchdog reset
    m = board.wait_for(r"\[tel\] (\d+) samples restored from RTC memory", 90, start=mark)
    assert int(m.group(1)) >= 20
    assert board.reset_causes[-1] == 3  # machine.WDT_RESET
    want = {n for n, _ in queued}
    got = delivered(plat, dn, want)
    ids = [s["id"] for s in got]
    # every queued sample arrived, exactly once, oldest first, as it was taken (timestamp)
    assert all(ids.count(n) == 1 for n in want), ids
    firsts = [n for k, n in enumerate(ids) if n not in ids[:k]]
    assert firsts == sorted(firsts)
    by_id = {s["id"]: s for s in got}
    for n, payload in queued:
        assert by_id[n] == json.loads(payload)
    # RTC memory kept the counter too: no id was skipped or repeated across both resets
    assert sorted(set(ids)) == list(range(1, max(ids) + 1))


def test_power_cut_with_the_flash_journal_loses_no_journaled_sample(runtime, plat, app_board):
    board = app_board(runtime, buffer_max=60, journal_s=1)
    dn = board.name
    board.wait_for(r"\[tel\] acked #2\b", timeout=60)
    acked = max(s["id"] for s in samples(plat, dn))
    queued = queue_offline(plat, board, 20)
    last = queued[-1][0]
    journaled = 0
    while journaled < last:
        m = board.wait_for(r"\[tel\] journaled #(\d+)", timeout=30, start=len(board.lines) - 1)
        journaled = max(journaled, int(m.group(1)))
    stamps = {n: json.loads(p) for n, p in rtc_queue(board)}
    mark = len(board.lines)
    board.power_cut(off=0.5)
    board.wait_for(r"\[board\] power cut", timeout=30, start=mark)
    m = board.wait_for(r"\[tel\] (\d+) queued restored from the flash journal", 90, start=mark)
    assert int(m.group(1)) >= journaled - acked
    plat.start_listening()
    want = set(range(acked + 1, journaled + 1))  # every sample that reached the journal
    got = delivered(plat, dn, want)
    ids = [s["id"] for s in got]
    assert all(ids.count(n) == 1 for n in want), ids
    by_id = {s["id"]: s for s in got}
    for n in want & set(stamps):
        assert by_id[n] == stamps[n]  # the original timestamp and values
    firsts = [n for k, n in enumerate(ids) if n not in ids[:k]]
    assert firsts == sorted(firsts), firsts
    # after the cold boot ids go on above every id handed out before it: unique across boots
    wait_until(lambda: len(samples(plat, dn)) > len(got) + 2, 60, "samples after the cut")
    new = [s["id"] for s in samples(plat, dn) if s["id"] not in stamps and s["id"] > acked]
    assert new and min(new) > max(stamps), (new[:3], max(stamps))


def test_power_cut_in_every_journal_write_step_loses_nothing_and_boots(runtime, plat, app_board):
    """A sweep: the power goes in the middle of four journal writes in a row, alternately while
    the record is written and while the file is committed; each time the board boots, and every
    sample the journal already held arrives in the end."""
    board = app_board(runtime, buffer_max=60, journal_s=1)
    dn = board.name
    board.wait_for(r"\[tel\] acked #2\b", timeout=60)
    plat.stop_listening(drop_connections=True)
    expected = set()
    for point in ("file_write", "file_close", "file_write", "file_close"):
        m = board.wait_for(r"\[tel\] journaled #(\d+)", timeout=60, start=len(board.lines) - 1)
        k = int(m.group(1))
        expected |= {n for n, _ in rtc_queue(board) if n <= k}
        mark = len(board.lines)
        board.power_cut(at=point, off=0.3)
        board.wait_for(r"\[board\] power cut", timeout=60, start=mark)
        board.wait_for(r"\[cred\] token loaded", timeout=90, start=mark)  # never blocks boot
        board.wait_for(r"\[tel\] \d+ queued restored from the flash journal", 30, start=mark)
    plat.start_listening()
    got = delivered(plat, dn, expected)
    ids = [s["id"] for s in got]
    assert all(ids.count(n) == 1 for n in expected), sorted(expected - set(ids))
    assert not any("Traceback" in line for line in board.lines)

# The outbox's flash journal, torn at every byte of every append: run under CPython and the
# MicroPython VM (tests/downlink/test_journal.py). Prints "OK <checks>" at the end.
import json
import os

from zeroburn import journal, telemetry


class Clock:
    def __init__(self):
        self.now = 0

    def ticks(self):
        return self.now

    def since(self, t):
        return self.now - t

    def unix_ms(self):
        return 1764547200000 + self.now


class HW:
    def __init__(self):
        self.rtc = b""

    def rtc_write(self, blob):
        self.rtc = bytes(blob)


class Cfg:
    journal_s = 1
    buffer_max = 50


class App:
    def __init__(self):
        self.buf = telemetry.Buffer(50)
        self.cfg = Cfg()
        self.clock = Clock()
        self.hw = HW()


def sample(a):
    a.clock.now += 1000
    a.buf.sample(a.clock.unix_ms(), a.clock.now // 1000, 20000, -50, 40.0)
    telemetry.save(a)  # RTC, then the journal (journal_s = 1 s: every sample is due)


def ids(items):
    return [it[0] for it in items]


def data():
    with open("outbox.jnl", "rb") as f:
        return f.read()


def put(b):
    with open("outbox.jnl", "wb") as f:
        f.write(b)


def fresh():
    for name in ("outbox.jnl", "outbox.jnl.tmp", "outbox.jnl.bad"):
        try:
            os.remove(name)
        except OSError:
            pass


def check_torn_append_sweep():
    fresh()
    a = App()
    for _ in range(5):
        sample(a)
    assert ids(journal.read()[0]) == [1, 2, 3, 4, 5]
    before = data()
    sample(a)  # the sixth record: its append is what gets torn
    after = data()
    assert len(after) > len(before)
    n = 0
    for cut in range(len(before), len(after)):
        put(after[:cut])
        items, acked, count, torn = journal.read()
        assert ids(items) == [1, 2, 3, 4, 5], cut  # nothing already in the journal is lost
        assert torn == (cut > len(before)) and count == 5
        b = App()
        journal.load(b, False)  # a cold boot on the torn journal: never raises, never blocks
        assert ids(b.buf.items) == [1, 2, 3, 4, 5] and b.buf.seq == 5
        # the payloads (and with them the original timestamps) come back as they were
        assert b.buf.items[4][1] == a.buf.items[4][1]
        sample(b)  # and the journal takes appends again after the torn tail
        assert ids(journal.read()[0]) == [1, 2, 3, 4, 5, 6]
        n += 1
    return n


def check_acknowledged_records_are_not_replayed():
    fresh()
    a = App()
    for _ in range(4):
        sample(a)
    # the session sends #1 and #2 (PUBACK each), the queue still holds #3, #4
    for _ in range(2):
        it = a.buf.items.pop(0)
        a.buf.meta["a"] = it[0]
        a.clock.now += 1000
        telemetry.save(a)
    items, acked, count, torn = journal.read()
    assert acked == 2 and ids(items) == [3, 4] and not torn
    # the queue runs empty: the acknowledgement goes to flash at once, whatever journal_s says
    a.cfg.journal_s = 3600
    for _ in range(2):
        it = a.buf.items.pop(0)
        a.buf.meta["a"] = it[0]
        telemetry.save(a)
    assert journal.read()[0] == []


def check_garbage_journal_never_blocks_boot():
    fresh()
    put(b"\x00\xffnot a journal" * 7)
    b = App()
    journal.load(b, False)
    assert b.buf.items == []
    sample(b)
    assert ids(journal.read()[0]) == [1]


def check_journal_stays_bounded():
    fresh()
    a = App()
    a.cfg.buffer_max = 5
    a.buf.limit = 5
    for _ in range(60):
        sample(a)
    items, acked, count, torn = journal.read()
    assert count <= 2 * 5 + 8 + 1, count  # rewritten compactly, not growing with every sample
    assert ids(items)[-5:] == ids(a.buf.items)


def check_warm_boot_merges_journal_and_rtc():
    fresh()
    a = App()
    for _ in range(3):
        sample(a)
    rtc = a.hw.rtc
    from zeroburn import start

    b = App()
    assert start.restore(b.buf, rtc)
    journal.load(b, True)
    assert ids(b.buf.items) == [1, 2, 3]
    assert json.loads(b.buf.items[0][1])["id"] == 1


def run_all():
    out = []
    for name in sorted(globals()):
        if name.startswith("check_"):
            r = globals()[name]()
            out.append("%s=%s" % (name, r))
    print("OK " + " ".join(out))

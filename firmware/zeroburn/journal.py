# The outbox's flash journal (config "journal_s" > 0): queued items that waited journal_s seconds
# unacknowledged are appended to a file, so they survive a power cut too. Loaded only when on.
# Wear: at most one append every journal_s seconds, and only while something waits (offline);
# docs/downlink-outbox.md works out the flash life per setting.
import binascii
import os

from micropython import const

from zeroburn import log

_FILE = "outbox.jnl"
_TMP = "outbox.jnl.tmp"
_SLACK = const(8)  # records beyond 2 x buffer_max before the file is rewritten compactly

# A record: b"J", kind (b"R" queued item, b"A" everything up to this id acknowledged), id (4),
# topic length (1), payload length (2), topic, payload, CRC-32 of kind..payload (4). Appends
# only: a torn append leaves a tail that fails its CRC, and reading stops there; everything
# before it is intact. Rewrites go to a temporary file renamed over the journal (atomic).


def record(kind, n, t=b"", p=b""):
    b = bytearray(13 + len(t) + len(p))
    b[0] = 0x4A
    b[1] = kind
    for k in range(4):
        b[2 + k] = n >> (24 - 8 * k) & 0xFF
    b[6] = len(t)
    b[7] = len(p) >> 8
    b[8] = len(p) & 0xFF
    b[9 : 9 + len(t)] = t
    b[9 + len(t) : 9 + len(t) + len(p)] = p
    i = 9 + len(t) + len(p)
    c = binascii.crc32(memoryview(b)[1:i])
    for k in range(4):
        b[i + k] = c >> (24 - 8 * k) & 0xFF
    return b


def read(path=_FILE):
    """(items queued and not acknowledged, oldest first; highest acknowledged id; records read;
    True when the file ended in a torn or corrupt record). A missing file is empty."""
    got = {}
    acked = 0
    count = 0
    torn = False
    try:
        f = open(path, "rb")
    except OSError:
        return [], 0, 0, False
    try:
        while True:
            h = f.read(9)
            if not h:
                break
            if len(h) < 9 or h[0] != 0x4A or h[1] not in (0x41, 0x52):
                torn = True
                break
            tl = h[6]
            pl = h[7] << 8 | h[8]
            body = f.read(tl + pl + 4)
            if len(body) < tl + pl + 4:
                torn = True
                break
            c = binascii.crc32(h[1:])
            c = binascii.crc32(memoryview(body)[: tl + pl], c)
            e = body[tl + pl :]
            if c != (e[0] << 24 | e[1] << 16 | e[2] << 8 | e[3]):
                torn = True
                break
            count += 1
            n = h[2] << 24 | h[3] << 16 | h[4] << 8 | h[5]
            if h[1] == 0x41:
                acked = max(acked, n)
            else:
                p = bytes(body[tl : tl + pl])
                got[n] = (n, p, bytes(body[:tl])) if tl else (n, p)
    finally:
        f.close()
    items = []
    for n in sorted(got):
        if n > acked:
            items.append(got[n])
    return items, acked, count, torn


def _append(recs):
    with open(_FILE, "ab") as f:
        for r in recs:
            f.write(r)


def rewrite(a):
    """The journal holds exactly the queue now (temporary file, then renamed over it)."""
    b = a.buf
    with open(_TMP, "wb") as f:
        for it in b.items:
            f.write(record(0x52, it[0], it[2] if len(it) > 2 else b"", it[1]))
    os.rename(_TMP, _FILE)
    m = b.meta
    m["j"] = b.items[-1][0] if b.items else m.get("a", 0)
    m["ja"] = m.get("a", 0)
    a.jn = len(b.items)


def run(a):
    """Append what is due: items queued for journal_s seconds (or more) and not journaled yet,
    and the acknowledgement of journaled items (at once when the queue ran empty)."""
    b = a.buf
    m = b.meta
    j = m.get("j", 0)
    acked = m.get("a", 0)
    ja = m.get("ja", 0)
    new = 0
    for it in b.items:
        if it[0] > j:
            new += 1
    ack_due = acked > ja and j > ja
    if not new and not ack_due:
        return
    last = getattr(a, "jt", None)
    if (
        last is not None
        and a.clock.since(last) < a.cfg.journal_s * 1000
        and not (ack_due and not b.items)
    ):
        return
    a.jt = a.clock.ticks()
    try:
        if getattr(a, "jn", 0) + new + 1 > 2 * a.cfg.buffer_max + _SLACK:
            rewrite(a)
        else:
            recs = []
            for it in b.items:
                if it[0] > j:
                    recs.append(record(0x52, it[0], it[2] if len(it) > 2 else b"", it[1]))
            if ack_due:
                recs.append(record(0x41, acked))
            _append(recs)
            del recs
            a.jn = getattr(a, "jn", 0) + new + (1 if ack_due else 0)
            if new:
                m["j"] = b.items[-1][0]
            m["ja"] = acked
    except OSError as e:  # a full or failing flash: RTC memory still holds the queue
        log("tel", "E: journal write failed: %r" % (e,))
        return
    if new:
        log("tel", "journaled #%d" % m["j"])
    a.hw.rtc_write(b.dump())


def load(a, warm):
    """At boot: merge what the journal kept into the queue (after a power cut it is all there is),
    then rewrite the journal when it was torn or holds acknowledged records. Never raises: a
    journal that cannot be read is set aside and the board boots."""
    b = a.buf
    try:
        items, acked, count, torn = read()
        done = max(acked, b.meta.get("a", 0) if warm else 0)
        have = {}
        for it in b.items:
            have[it[0]] = it
        for it in items:
            if it[0] > done and it[0] not in have:
                have[it[0]] = it
        b.items = []
        top = b.seq
        for n in sorted(have):
            b.add(n, have[n][1], have[n][2] if len(have[n]) > 2 else None)
            top = max(top, n)
        b.seq = top
        m = b.meta
        m["a"] = done
        a.jn = count
        if items:
            log("tel", "%d queued restored from the flash journal" % len(items))
        if torn or count != len(items):
            rewrite(a)
        else:
            m["j"] = items[-1][0] if items else done
            m["ja"] = done
    except (OSError, ValueError, MemoryError) as e:
        log("tel", "E: flash journal unreadable (%r): set aside" % (e,))
        try:
            os.rename(_FILE, _FILE + ".bad")
        except OSError:
            pass

# The durable outbox: the queue of samples and events (telemetry.Buffer) mirrored into RTC memory
# at every change, so a watchdog reset, machine.reset() or a soft reset loses nothing; the
# optional flash journal (journal.py) adds power cuts; message ids reserved in flash stay unique
# across cold boots (session.reserve). Resident, so kept small: it runs at every change.
import binascii
import json
import struct

from micropython import const

_RTC_BYTES = const(2048)  # ESP32 RTC user memory (RTC.memory() raises ValueError above it)
_VERSION = const(2)

# RTC image: b"ZQ", version, header length (2 bytes), header JSON {"n": last id, "d": dropped,
# "m": meta}, then per queued item: id (4), topic length (1), payload length (2), topic, payload;
# last a CRC-32 of all before it (4). Power loss leaves RTC memory random: the CRC says so.
# An item is (id, payload bytes) for a sample (to user/update) or (id, payload, topic suffix)
# for an event or a message of the application (topic: see session.topic_of()).


def encode(buf):
    """telemetry.Buffer buf as one bytearray of at most 2,048 bytes, built in place (no copy of
    the queue); the oldest items that do not fit are dropped and counted, never silently."""
    while True:
        hdr = json.dumps({"n": buf.seq, "d": buf.dropped, "m": buf.meta}).encode()
        size = 9 + len(hdr)
        for it in buf.items:
            size += 7 + len(it[1]) + (len(it[2]) if len(it) > 2 else 0)
        if size <= _RTC_BYTES or not buf.items:
            break
        buf.items.pop(0)
        buf.dropped += 1
    b = bytearray(size)
    struct.pack_into(">2sBH", b, 0, b"ZQ", _VERSION, len(hdr))
    i = 5 + len(hdr)
    b[5:i] = hdr
    for it in buf.items:
        t = it[2] if len(it) > 2 else b""
        p = it[1]
        struct.pack_into(">IBH", b, i, it[0], len(t), len(p))
        i += 7
        b[i : i + len(t)] = t
        i += len(t)
        b[i : i + len(p)] = p
        i += len(p)
    struct.pack_into(">I", b, i, binascii.crc32(memoryview(b)[:i]))
    return b


def save(a):
    """App a's queue changed (a sample or an event queued, an item acknowledged): into RTC memory
    now, and into the flash journal when it is on and due."""
    a.hw.rtc_write(encode(a.buf))
    if a.cfg.journal_s:
        from zeroburn import journal  # stays loaded while the journal is on

        journal.sync(a)

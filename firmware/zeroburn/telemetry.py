# Telemetry samples and the durable outbox: the bounded queue (RAM) mirrored into RTC memory at
# every change (save()), so a watchdog reset, machine.reset() or a soft reset loses nothing; the
# optional flash journal (journal.py) adds power cuts. Resident, so kept small.
import binascii
import json

from micropython import const

_RTC_BYTES = const(2048)  # ESP32 RTC user memory (RTC.memory() raises ValueError above it)

# RTC image: b"ZQ", version 2, header length (2 bytes), header JSON {"n": last id, "d": dropped,
# "m": meta}, then per queued item: id (4), topic length (1), payload length (2), topic, payload;
# last a CRC-32 of all before it (4). Power loss leaves RTC memory random: the CRC says so.
# An item is (id, payload bytes) for a sample (to user/update) or (id, payload, topic suffix)
# for an event or a message of the application (see session.online()).


def save(a):
    """App a's queue changed (a sample or an event queued, an item acknowledged): into RTC memory
    now, and into the flash journal when it is on and due."""
    try:
        a.hw.rtc_write(a.buf.dump())
    except MemoryError:  # a heap too full right now: RTC memory keeps the last image, and the
        pass  # next change writes it again; the sample itself stays queued in RAM
    if a.cfg.journal_s:
        # (by a module path of more than 10 characters: no qstr for it in a board without it)
        __import__("zeroburn.journal", None, None, ("run",)).run(a)


class Buffer:
    """Serialized samples, oldest first; when full the oldest are dropped and counted."""

    def __init__(self, limit):
        self.limit = limit
        self.items = []  # (seq, payload bytes) samples, (seq, payload, topic suffix) the rest
        # total dropped since cold boot, in every later sample: a report that is itself dropped
        # does not hide the loss
        self.dropped = 0
        self.seq = 0
        self.meta = {}  # the app's own small state that must survive deep sleep

    def add(self, seq, msg, topic=None):
        self.items.append((seq, msg) if topic is None else (seq, msg, topic))
        while len(self.items) > self.limit:
            self.items.pop(0)
            self.dropped += 1

    def sample(self, unix_ms, uptime_s, heap_free, rssi, temp_c, sensors=None):
        """Take one sample (its timestamp is kept through any outage) and queue it."""
        self.seq += 1
        d = {"id": self.seq, "ts": unix_ms, "uptime_s": uptime_s, "heap_free": heap_free}
        if rssi is not None:
            d["rssi"] = rssi
        if temp_c is not None:
            d["temp_c"] = temp_c
        if self.dropped:
            d["dropped"] = self.dropped
        if sensors:
            d["sensors"] = sensors
        self.add(self.seq, json.dumps(d, separators=(",", ":")).encode())
        return self.seq

    def dump(self):
        """The queue as one bytearray of at most 2,048 bytes (start.restore() takes it back),
        built in place: the newest items that fit. Those left out stay queued in RAM, and the
        image counts them as dropped, which they are if a reset comes before they are sent."""
        items = self.items
        k = 0
        while True:
            hdr = json.dumps({"n": self.seq, "d": self.dropped + k, "m": self.meta}).encode()
            size = 9 + len(hdr)
            for j in range(k, len(items)):
                it = items[j]
                size += 7 + len(it[1]) + (len(it[2]) if len(it) > 2 else 0)
            if size <= _RTC_BYTES or k >= len(items):
                break
            k += 1
        b = bytearray(size)
        b[0:5] = b"ZQ\x02" + len(hdr).to_bytes(2, "big")
        i = 5 + len(hdr)
        b[5:i] = hdr
        for j in range(k, len(items)):
            it = items[j]
            t = it[2] if len(it) > 2 else b""
            p = it[1]
            b[i : i + 7] = (it[0] << 24 | len(t) << 16 | len(p)).to_bytes(7, "big")
            i += 7
            b[i : i + len(t)] = t
            i += len(t)
            b[i : i + len(p)] = p
            i += len(p)
        b[i:] = binascii.crc32(memoryview(b)[:i]).to_bytes(4, "big")
        return b

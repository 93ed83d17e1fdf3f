# Telemetry samples and the bounded offline buffer (RAM, mirrored into RTC memory by outbox.py at
# every change, so it survives resets and deep sleep).
import json


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

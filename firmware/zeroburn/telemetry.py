# Telemetry samples and the bounded offline buffer (RAM; RTC memory across deep sleep).
import json

RTC_BYTES = 2048  # ESP32 RTC user memory


class Buffer:
    """Serialized samples, oldest first; when full the oldest are dropped and counted."""

    def __init__(self, limit):
        self.limit = limit
        self.items = []  # (seq, payload bytes)
        # total dropped since cold boot, in every later sample: a report that is itself dropped
        # does not hide the loss
        self.dropped = 0
        self.seq = 0
        self.meta = {}  # the app's own small state that must survive deep sleep

    def add(self, seq, payload):
        self.items.append((seq, payload))
        while len(self.items) > self.limit:
            self.items.pop(0)
            self.dropped += 1

    def sample(self, unix_ms, uptime_s, heap, rssi, temp, sensors=None):
        """Take one sample (its timestamp is kept through any outage) and queue it."""
        self.seq += 1
        d = {"id": self.seq, "ts": unix_ms, "uptime_s": uptime_s, "heap_free": heap}
        if rssi is not None:
            d["rssi"] = rssi
        if temp is not None:
            d["temp_c"] = temp
        if self.dropped:
            d["dropped"] = self.dropped
        if sensors:
            d["sensors"] = sensors
        self.add(self.seq, json.dumps(d).encode())
        return self.seq

    def dump(self):
        """Bytes for RTC memory, dropping (and counting) the oldest samples that do not fit."""
        while True:
            q = []
            for n, p in self.items:
                q.append((n, p.decode()))
            blob = json.dumps({"q": q, "n": self.seq, "d": self.dropped, "m": self.meta})
            blob = blob.encode()
            if len(blob) <= RTC_BYTES or not self.items:
                return blob
            self.items.pop(0)
            self.dropped += 1

    def restore(self, blob):
        """Take back what dump() saved; anything unreadable is ignored (cold boot)."""
        try:
            d = json.loads(blob)
            self.seq, self.dropped, self.meta = int(d["n"]), int(d["d"]), dict(d["m"])
            for n, p in d["q"]:
                self.add(int(n), p.encode())
        except (ValueError, KeyError, TypeError, AttributeError):
            return False
        return True


def alink_post(sample):
    """Alink thing-model property post carrying a sample's numeric fields."""
    d = json.loads(sample)
    params = {}
    for k in ("uptime_s", "heap_free", "rssi", "temp_c"):
        if k in d:
            params[k] = {"value": d[k], "time": d["ts"]}
    return json.dumps(
        {
            "id": str(d["id"]),
            "version": "1.0",
            "sys": {"ack": 0},
            "params": params,
            "method": "thing.event.property.post",
        }
    ).encode()

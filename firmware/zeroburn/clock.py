# Time: monotonic ticks, Unix milliseconds (whatever epoch the port uses), NTP-over-MQTT refine.
import time

from micropython import const

# Seconds from 1970-01-01 to 2000-01-01: the ESP32 port counts from 2000, unix/CPython from 1970.
_EPOCH_2000 = const(946684800)


class Clock:
    """Ticks, sleeps that feed the watchdog, Unix ms corrected by the platform's NTP. Tests
    replace it with a virtual clock (the same methods)."""

    def __init__(self):
        self.offset_ms = (_EPOCH_2000 if time.gmtime(0)[0] == 2000 else 0) * 1000
        # uptime: whole seconds counted out of the ticks window (2**30 ms on a 32-bit port,
        # ticks_diff right within 2**29 ms = 6.2 days) into a plain int, at every sleep slice
        self.boot = time.ticks_ms()
        self.up_s = 0

    def ticks(self):
        return time.ticks_ms()

    def add(self, t, ms):
        return time.ticks_add(t, ms)

    def since(self, t):
        return time.ticks_diff(time.ticks_ms(), t)

    def sleep_ms(self, ms, feed):
        """Sleep in slices so the watchdog (and the sample timer) keep being served."""
        end = time.ticks_add(time.ticks_ms(), ms)
        while True:
            feed()
            self.uptime_s()
            left = time.ticks_diff(end, time.ticks_ms())
            if left <= 0:
                return
            time.sleep_ms(min(left, 500))

    def unix_ms(self):
        return time.time_ns() // 1000000 + self.offset_ms

    def uptime_s(self):
        """Seconds since boot, right for years (a small int for 34 of them), as long as it is
        called at least every 6.2 days: sleep_ms calls it at every slice."""
        s = time.ticks_diff(time.ticks_ms(), self.boot) // 1000
        if s > 0:
            self.boot = time.ticks_add(self.boot, s * 1000)
            self.up_s += s
        return self.up_s

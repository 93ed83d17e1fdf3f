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
        self.boot = time.ticks_ms()

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
            left = time.ticks_diff(end, time.ticks_ms())
            if left <= 0:
                return
            time.sleep_ms(min(left, 500))

    def unix_ms(self):
        return time.time_ns() // 1000000 + self.offset_ms

    def uptime_s(self):
        # ticks wrap after 2**30 ms (12.4 days): uptime is exact below that, modulo above
        return time.ticks_diff(time.ticks_ms(), self.boot) // 1000

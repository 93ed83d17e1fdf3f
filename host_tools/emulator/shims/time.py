# `time` as the ESP32 port has it: seconds count from 2000-01-01, the RTC starts at 2000 on
# power-on and is set by ntptime / RTC.datetime; ticks_* and sleep_* pass through.
import utime
import zbboard
from utime import *  # noqa: F401,F403

EPOCH_2000 = 946684800  # seconds from 1970-01-01 to 2000-01-01


def _offset():
    # RTC = host clock + offset; the host sets the offset at power-on (clock at 2000) and
    # ntptime/clock drift move it. It survives resets and deep sleep, as the RTC does.
    return float(zbboard.ctl("rtc_offset", "0"))


def _now():
    return zbboard.host_time() - EPOCH_2000 + _offset()


def _set(secs):
    """Set the RTC to `secs` seconds since 2000."""
    zbboard.set_ctl("rtc_offset", repr(secs - (zbboard.host_time() - EPOCH_2000)))


def time():
    return int(_now())


def time_ns():
    return int(_now() * 1000000) * 1000


def gmtime(secs=None):
    if secs is None:
        secs = _now()
    return utime.gmtime(int(secs) + EPOCH_2000)


def localtime(secs=None):
    return gmtime(secs)  # the ESP32 port has no time zones


def mktime(t):
    return int(utime.mktime(t)) - EPOCH_2000


def sleep(s):
    sleep_ms(int(s * 1000))


def sleep_ms(ms):
    # in slices, so a power cut (CPython runtime) unwinds a sleeping board promptly
    while ms > 0:
        zbboard.checkpoint()
        step = 100 if ms > 100 else ms
        zbboard.sleep_ms(step)
        ms -= step
    zbboard.checkpoint()

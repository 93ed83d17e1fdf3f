# Duty-cycle mode (battery devices), loaded only in that mode: one wake, then deep sleep.
from zeroburn import log

RTC_BYTES = 2048  # ESP32 RTC user memory


def wake(a):
    """Sample, connect with the stored token, flush, disconnect, deep sleep for the interval."""
    try:
        a.phase("link")  # the sample's timestamp wants a set clock
    except Exception as e:
        log("net", "W: %r" % (e,))
    a.sample()
    delay = a.step()
    if not delay and a.buf.items:
        delay = a.step()  # just registered: now log in and send
    a.hw.rtc_write(dump(a.buf))  # telemetry.save() did already; kept for what step() changed
    sleep = max(a.cfg.interval_s * 1000, delay)
    log("app", "deep sleep %d s" % (sleep // 1000))
    a.hw.deepsleep(sleep)


def dump(buf):
    """telemetry.Buffer buf as bytes for RTC memory (start.restore() takes them back), dropping
    and counting the oldest samples that do not fit (the outbox's format)."""
    return buf.dump()

# fw_scenarios' helpers kept out of its module (the memory test runs that one in the firmware's
# heap): a virtual clock for long runs (a 32-bit port's ticks), a trace of the TLS context.


class VirtualTime:
    """Stands in for the `time` module of zeroburn.clock: ticks of a 32-bit port (period
    2**30 ms, which the VM's 64-bit ticks never reach), starting `start` ms before the wrap;
    every sleep advances virtual time `scale` times as far and returns at once."""

    PERIOD = 1 << 30

    def __init__(self, stop, real, start, scale, limit_ms):
        self.stop = stop
        self.real = real
        self.t0 = self.PERIOD - start
        self.now = 0  # virtual ms since boot
        self.scale = scale
        self.limit = limit_ms

    def ticks_ms(self):
        return (self.t0 + self.now) % self.PERIOD

    def ticks_add(self, t, d):
        return (t + d) % self.PERIOD

    def ticks_diff(self, a, b):
        d = (a - b) % self.PERIOD
        return d - self.PERIOD if d >= self.PERIOD // 2 else d

    def sleep_ms(self, ms):
        self.now += ms * self.scale
        if self.now > self.limit:
            raise self.stop("virtual time limit")

    def gmtime(self, secs=0):
        return self.real.gmtime(secs)

    def time_ns(self):
        return self.real.time_ns() + self.now * 1000000


def wrap_clock(stop, start, scale, limit_ms):
    """The firmware's own Clock, running on VirtualTime; `stop` is raised at the limit."""
    import time

    from zeroburn import clock

    class WrapClock(clock.Clock):
        now = property(lambda c: c.vt.now)  # FakeClock's field, read by fw_scenarios' RESULT

    vt = VirtualTime(stop, time, start, scale, limit_ms)
    clock.time = vt
    c = WrapClock()
    c.sleeps = []
    c.vt = vt
    return c


def tls_enomem():
    raise OSError(12)  # ENOMEM: what mbedTLS's failed allocation raises


def harness_prepare(x, hw, stop, clock):
    """What fw_scenarios' "harness_extras" ask for; returns the clock to run with."""
    if x.get("trace"):
        hw.harness_trace = []
        hw.harness_trace_note = hw.harness_trace.append
        trace_tls(hw.harness_trace)
    if x.get("oom") == "tls":
        hw.harness_opener = tls_enomem
    w = x.get("wrap")
    if w:
        clock = wrap_clock(stop, w[0], w[1], x["limit_ms"])
    return clock


def trace_tls(trace):
    """Make zeroburn.start's SSLContext note itself in `trace` when it is created."""
    from zeroburn import start

    real = start.ssl

    class Traced:
        PROTOCOL_TLS_CLIENT = real.PROTOCOL_TLS_CLIENT
        CERT_REQUIRED = real.CERT_REQUIRED

        @staticmethod
        def SSLContext(protocol):
            trace.append("tls context made")
            return real.SSLContext(protocol)

    start.ssl = Traced

# One boot of the app with fakes for the board and clock, real TLS to the test broker; both
# runtimes. Parameters come from scenario.json in the cwd (the board's "flash"); RTC memory
# persists in rtc.bin between boots. Prints the console, then one "RESULT [json list]" line
# (tests/firmware/conftest.py RESULT_KEYS names its items). One module, few names: the memory
# test runs it in the firmware's heap, where every name is a qstr for good.
import gc
import json

from zeroburn.clock import Clock


class Stop(BaseException):
    """Ends a test run from inside the firmware (not an Exception: the app must not catch it)."""


class FakeHW:
    def __init__(self, mac=b"\x24\x0a\xc4\x12\x34\x56", nvs=None):
        self.mac = mac
        self._nvs = nvs
        self.rtc = b""
        self.wifi = True
        self.ntp_ok = True
        self.feeds = 0
        self.peak = 0
        self.wdt = None
        self.slept = None

    def unique_id(self):
        return self.mac

    def radio_on(self):
        note = getattr(self, "harness_trace_note", None)  # fw_longrun's, when tracing
        if note:
            note("radio switched on")

    def wifi_start(self, ssid, password):
        pass

    def wifi_ok(self):
        return self.wifi

    def rssi(self):
        return -55

    def wdt_start(self, seconds):
        self.wdt = seconds

    def feed(self):
        self.feeds += 1
        used = gc.mem_alloc()  # feed() runs inside every wait: a fair place to sample the heap
        if used > self.peak:
            self.peak = used

    def rtc_read(self):
        return self.rtc

    def rtc_write(self, blob):
        # kept as given (telemetry.Buffer.dump() makes a new one each time): a board's RTC.memory()
        # copies into RTC RAM, not into the GC heap, so a copy here would count what it does not
        self.rtc = blob

    def nvs(self):
        return self._nvs

    def temperature(self):
        return 41.5

    def reset(self):
        raise Stop("reset")

    def deepsleep(self, ms):
        self.slept = ms
        raise Stop("deepsleep %d" % ms)

    def safe_mode_pin(self, pin):
        return False

    def ntp(self, host):
        return self.ntp_ok


class FakeClock(Clock):
    """Virtual time: sleeps return at once, so minutes of back-off cost nothing; stops at limit."""

    def __init__(self, limit_ms):
        Clock.__init__(self)
        self.now = 0
        self.limit = limit_ms
        self.sleeps = []

    def ticks(self):
        return self.now

    def add(self, t, ms):
        return t + ms

    def since(self, t):
        return self.now - t

    def sleep_ms(self, ms, feed):
        if ms >= 1000:  # back-off waits only: the idle loop's 100 ms naps would fill the heap
            self.sleeps.append(ms)
        end = self.now + ms
        while True:  # slices, as Clock.sleep_ms: the sample timer keeps running
            feed()
            if self.now >= end:
                return
            self.now = min(end, self.now + 500)
            if self.now > self.limit:
                raise Stop("virtual time limit")

    def unix_ms(self):
        return Clock.unix_ms(self) + self.now

    def uptime_s(self):
        return self.now // 1000


def out_of_memory():
    raise MemoryError("memory allocation failed, allocating 4096 bytes")


def boot():
    from zeroburn import app, config  # app first, as main.py does; config parsed once, dropped

    with open("scenario.json") as f:
        p = json.load(f)
    cfg = config.settings(config.parse(p["cfg"]))
    del config
    app.unload("config")
    gc.collect()
    hw = FakeHW()
    try:
        with open("rtc.bin", "rb") as f:
            hw.rtc = f.read()
    except OSError:
        pass
    hw.wifi = p.get("wifi", True)
    clock = FakeClock(p["limit_ms"])
    # Long-run clock, TLS trace, mbedTLS's ENOMEM: fw_longrun's, named by long strings (not
    # interned): the memory test runs this module in the firmware's heap, where every name is
    # a qstr for good.
    x = p.get("harness_extras")
    if x:
        clock = getattr(__import__("fw_longrun"), "harness_prepare")(x, hw, Stop, clock)  # noqa: B009
    thing = None
    if p.get("thing"):  # thing-model handlers (tests/downlink): not loaded otherwise
        # names of 10 characters or more: not interned where the memory test runs this module
        thing = getattr(__import__("fw_thingmodel"), "thing_handlers")()  # noqa: B009
    a = app.App(cfg, hw, clock, thing=thing)
    a.io_ms = p.get("io_ms", 3000)
    a.reply_ms = p.get("reply_ms", 3000)
    if p.get("oom"):  # every connection attempt runs out of memory
        a.opener = getattr(hw, "harness_opener", out_of_memory)
    reason = None
    try:
        a.run()
    except Stop as e:
        reason = str(e)
    from zeroburn import creds

    with open("rtc.bin", "wb") as f:
        f.write(hw.rtc)
    result = [  # RESULT_KEYS
        reason,
        a.regs,
        creds.Store().load() is not None,
        [n for n, _ in a.buf.items],
        clock.sleeps,
        clock.now,
        hw.feeds,
        hw.peak,
        hw.slept,
        a.buf.meta,
        getattr(hw, "harness_trace", None),
    ]
    print("RESULT", json.dumps(result))

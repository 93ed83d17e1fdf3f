# The device's life: Wi-Fi, time, register once (regnwl), then connwl telemetry with back-off.
# Only the loop, sampling and back-off stay in the heap: phase modules (start, config, sign, reg,
# session, creds, duty) are imported when needed and then dropped from sys.modules, so the
# GC frees their code, which a 48 KiB heap needs. Nothing here may keep a reference to them.
import gc
import os
import sys

from micropython import const

from zeroburn import log, net, telemetry
from zeroburn.clock import Clock

_IO_MS = const(10000)  # TCP connect, TLS handshake, CONNACK, SUBACK, PUBACK, each read
_REPLY_MS = const(10000)  # wait for /ext/regnwl after CONNACK 0 (reg)
_NET_BASE_MS = const(2000)
_NET_CAP_MS = const(300000)
_REG_CAP_MS = const(21600000)  # 6 h


def unload(name):
    """Forget zeroburn.<name> (sys.modules and the package attribute) so the GC frees its code;
    the next import loads it again."""
    sys.modules.pop("zeroburn.%s" % name, None)
    try:
        delattr(sys.modules["zeroburn"], name)
    except (AttributeError, KeyError):
        pass


def jittered(base, n, cap):
    """Exponential back-off with equal jitter: half fixed, half random."""
    d = min(cap, base << min(n, 20))
    return d // 2 + (d // 2) * int.from_bytes(os.urandom(2), "big") // 65536


class App:
    """One device. State that must survive deep sleep lives in buf.meta (RTC memory):
    rf registration failures in a row, cr connwl refusals in a row, rn registrations."""

    def __init__(self, cfg, hw, clock, opener=None, sensors=None, downlink=None):
        """cfg: config.settings(); hw: hw.Hardware or a fake; opener() -> net.Transport
        (default: verified TLS to the configured endpoint)."""
        self.cfg = cfg
        self.host = cfg.endpoint_host
        self.hw = hw
        self.clock = clock
        self.sensors = sensors
        self.on_downlink = downlink
        self.opener = opener or self.open_tls
        self.ctx = None  # start.prepare() builds it
        self.io_ms = _IO_MS  # instance attributes, so tests can shorten them
        self.reply_ms = _REPLY_MS
        self.buf = telemetry.Buffer(cfg.buffer_max)
        self.dn = self.nvs = self.rec = self.ntp_sent = None
        self.regs = 0  # registrations so far (kept in the credential record)
        self.net_fails = 0
        self.synced = False
        self.next_sample = clock.ticks()

    def open_tls(self):
        return net.open_tls(self.ctx, self.host, self.cfg.port, self.io_ms, self.feed)

    def feed(self):
        """Called from every wait: watchdog, and the sample timer keeps running offline."""
        self.hw.feed()
        # no sample before the clock is set: its timestamp would be wrong for good
        if (
            self.synced
            and self.cfg.mode == "continuous"
            and self.clock.since(self.next_sample) >= 0
        ):
            self.sample()

    def sample(self):
        self.next_sample = self.clock.add(self.clock.ticks(), self.cfg.interval_s * 1000)
        extra = None
        if self.sensors:
            try:
                extra = self.sensors()
            except Exception as e:  # a broken sensor must not stop telemetry
                log("tel", "W: sensor hook: %r" % (e,))
        hw = self.hw
        self.buf.sample(
            self.clock.unix_ms(),
            self.clock.uptime_s(),
            gc.mem_free(),
            hw.rssi(),
            hw.temperature(),
            extra,
        )

    def net_delay(self):
        self.net_fails += 1
        return jittered(_NET_BASE_MS, self.net_fails - 1, _NET_CAP_MS)

    def reg_delay(self):
        m = self.buf.meta
        n = m["rf"] = m.get("rf", 0) + 1
        return jittered(self.cfg.reg_backoff_s * 2000, n - 1, _REG_CAP_MS)

    def phase(self, name):
        """One phase module's run(self) (link: Wi-Fi and clock up, True when ready; reg: register,
        session: log in and stay online until the link fails; both return the delay before the
        next step). The module, and the ones it
        loaded (sign, creds), leave the heap afterwards."""
        mod = __import__("zeroburn.%s" % name, None, None, (name,))
        try:
            return mod.run(self)
        finally:
            del mod
            for m in (name, "sign", "creds"):
                unload(m)
            gc.collect()

    def step(self):
        """One pass: link, then register or log in. Returns ms to wait before the next."""
        try:
            if not self.phase("link"):
                return self.net_delay()
            return self.phase("reg" if self.rec is None else "session")
        except Exception as e:  # network trouble of any kind: closed already, back off, retry
            log("net", "W: %s %r" % (type(e).__name__, e.args))
            return self.net_delay()
        finally:
            gc.collect()

    def run(self):
        from zeroburn import start

        start.prepare(self)  # TLS context, device name, RTC samples, stored token, watchdog
        del start
        unload("start")
        gc.collect()
        # mqtt (and umqtt.simple) serve only reg and session but stay loaded for good: loaded
        # now, into the room start left, rather than later into a fragmented heap
        from zeroburn import mqtt  # noqa: F401

        if self.cfg.mode == "duty_cycle":
            from zeroburn import duty

            return duty.wake(self)
        while True:
            delay = self.step()
            if delay:
                log("app", "retry in %d s" % (delay // 1000))
                self.clock.sleep_ms(delay, self.feed)


def main(sensors=None, downlink=None):
    """Entry point from main.py: safe mode and config (start.boot), then run on the board."""
    from zeroburn import start

    got = start.boot()
    del start
    unload("start")
    if got is None:
        return
    cfg, hw = got
    del got
    a = App(cfg, hw, Clock(), sensors=sensors, downlink=downlink)
    try:
        a.run()
    except (OSError, ValueError) as e:  # before the watchdog starts: a missing or bad ca.pem
        log("cfg", "E: %s: %r; not starting" % (cfg.ca_file, e))

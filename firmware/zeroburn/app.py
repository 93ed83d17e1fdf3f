# The device's life: Wi-Fi, time, register once (regnwl), then connwl telemetry with back-off.
# Only the loop, sampling and back-off stay in the heap: phase modules (start, config, sign, reg,
# session, creds, duty) are imported when needed and then dropped from sys.modules, so the
# GC frees their code, which a 48 KiB heap needs. Nothing here may keep a reference to them.
import errno
import gc
import os
import sys

from micropython import const

from zeroburn import log, net, telemetry, unload
from zeroburn.clock import Clock

_IO_MS = const(10000)  # each read or write: SUBACK, PUBACK, a packet's bytes
_REPLY_MS = const(10000)  # wait for /ext/regnwl after CONNACK 0 (reg)
_NET_BASE_MS = const(2000)
_NET_CAP_MS = const(300000)
_REG_CAP_MS = const(21600000)  # 6 h
_OOM_RESETS = const(3)  # out-of-memory errors in a row before the board resets itself
# Indices into App.ota, the OTA state (zeroburn.otainit owns the list; docs/ota.md)
_OTA_MSG = const(6)
_OTA_JOB = const(7)
_OTA_UNTIL = const(8)
_OTA_BUF = const(9)


def jittered(ms, n, limit):
    """ms doubled n times, at most limit; equal jitter: half fixed, half random."""
    d = min(limit, ms << min(n, 20))
    return d // 2 + (d // 2) * int.from_bytes(os.urandom(2), "big") // 65536


class App:
    """One device. State that must survive deep sleep lives in buf.meta (RTC memory):
    rf registration failures in a row, cr connwl refusals in a row, rn registrations."""

    ota: "list | None"  # OTA state, mixed values (otainit); a class annotation costs no heap

    def __init__(self, cfg, hw, clock, opener=None, sensors=None, downlink=None, thing=None):
        """cfg: config.settings(); hw: hw.Hardware or a fake; opener() -> net.Transport
        (default: verified TLS to the configured endpoint)."""
        self.cfg = cfg
        self.host = cfg.endpoint_host
        self.hw = hw
        self.clock = clock
        self.sensors = sensors
        self.on_downlink = downlink
        self.thing = thing  # (properties, services, rrpc) for thing.py, or None
        self.opener = opener or self.open_tls
        self.ctx = None  # start.prepare() builds it, with the radio on
        self.io_ms = _IO_MS  # instance attributes, so tests can shorten them
        self.reply_ms = _REPLY_MS
        self.buf = telemetry.Buffer(cfg.buffer_max)
        self.dn = self.nvs = self.rec = self.ntp_sent = None
        self.regs = 0  # registrations so far (kept in the credential record)
        self.net_fails = 0
        self.oom = 0  # out-of-memory errors in a row
        self.synced = False
        self.next_sample = clock.ticks()
        self.ota = None  # OTA state: a list (no dict keys, no attributes: no new qstrs)

    def open_tls(self):
        # DNS + TCP + TLS + CONNACK within cfg.connect_s, in total
        c = self.cfg
        t = net.open_tls(self.ctx, self.host, c.port, self.io_ms, self.feed, c.connect_s * 1000)
        if self.ota:
            t.buf = self.ota[_OTA_BUF]  # long downlinks (an OTA push) are read into it
        return t

    def feed(self):
        """Called from every wait: watchdog, and the sample timer keeps running offline."""
        self.hw.feed()
        if self.cfg.mode != "continuous":
            return
        # no sample before the clock is set: its timestamp would be wrong for good (and the
        # timer stays due, not days stale: ticks_diff answers only within 2**29 ms)
        if not self.synced:
            self.next_sample = self.clock.ticks()
        elif self.clock.since(self.next_sample) >= 0:
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
        if self.rec:  # RTC memory now: a reset any time later keeps the sample (before the
            telemetry.save(self)  # board has a token, the registration's TLS needs the heap)

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
        o = self.ota
        try:
            if o and o[_OTA_UNTIL] is not None and self.clock.since(o[_OTA_UNTIL]) > 0:
                __import__("otaboot").done("no cloud session in time")  # goes back, resets
            if o and o[_OTA_MSG]:
                self.reset("an upgrade came: the download starts from a fresh heap")
            if not self.phase("link"):
                return self.net_delay()
            if o and o[_OTA_JOB]:
                # an upgrade, with no session open; the phase ends in a reset, so MQTT's
                # modules leave the heap to make room for it
                unload("mqtt")
                sys.modules.pop("umqtt.simple", None)
                sys.modules.pop("umqtt", None)
                gc.collect()
                return self.phase("ota")
            return self.phase("reg" if self.rec is None else "session")
        except Exception as e:
            # Out of memory: MemoryError from the VM, OSError(ENOMEM) from mbedTLS. A heap
            # too fragmented for the next phase stays so: a few in a row, and the board starts
            # afresh (the token is in flash, queued samples go to RTC memory first).
            oom = isinstance(e, MemoryError)
            if isinstance(e, OSError) and e.args[:1] == (errno.ENOMEM,):
                oom = True
            if oom:
                self.oom += 1
                log("app", "E: %r, %d of %d in a row" % (e, self.oom, _OOM_RESETS))
                if self.oom >= _OOM_RESETS:
                    self.reset()
                return self.net_delay()
            self.oom = 0  # network trouble of any kind: closed already, back off, retry
            log("net", "W: %s %r" % (type(e).__name__, e.args))
            return self.net_delay()
        finally:
            gc.collect()

    def reset(self, e="E: out of memory"):
        log("app", "%s: resetting" % e)
        gc.collect()
        try:
            self.hw.rtc_write(self.buf.dump())
        except MemoryError:
            pass
        self.hw.reset()

    def run(self):
        from zeroburn import start

        start.prepare(self)  # TLS context, device name, RTC samples, stored token, watchdog
        del start
        unload("start")
        gc.collect()
        # the buffer long downlinks are read into (an OTA push), while a block this long is
        # free; zeroburn.otainit builds the OTA state around it below. Not on the boot that
        # registers: the registration needs that room, and an upgrade can wait for a reset.
        if self.rec:
            self.ota = bytearray(1024)  # pyright: ignore[reportAttributeAccessIssue]  (until otainit makes the list around it: one attribute, no new name)
        # Now, into the room start left and while the heap is still in one piece: mqtt and
        # umqtt.simple (they stay for good), and every phase module once, then dropped again,
        # so that the names they intern (qstrs, kept for good however late they are made, and a
        # new pool of them needs one 3.6 KiB block) are made here rather than later, between
        # a session's transient blocks.
        cfg = self.cfg
        try:  # an upgrade to download (docs/ota.md): the room is for it, MQTT is not needed
            os.stat("/zb/job.json")
            names = ()
        except OSError:
            from zeroburn import mqtt  # noqa: F401

            names = (
                "link",
                "reg",
                "session",
                cfg.mode == "duty_cycle" and "duty",
                cfg.alink and "alink",
                self.thing and "thing",
            )
        for name in names:
            if name:
                __import__("zeroburn.%s" % name)
                unload(name)
        gc.collect()
        self.phase("otainit")  # OTA state: the running version, topics, probation (docs/ota.md)
        if cfg.mode == "duty_cycle":
            from zeroburn import duty

            return duty.wake(self)
        while True:
            delay = self.step()
            if delay:
                log("app", "retry in %d s" % (delay // 1000))
                self.clock.sleep_ms(delay, self.feed)


def main(sensors=None, downlink=None, properties=None, services=None, rrpc=None, setup=None):
    """Entry point from main.py: safe mode and config (start.boot), then run on the board.
    properties {id: (getter, setter or None)}, services {id: fn(params) -> dict}, rrpc
    fn(payload, topic) -> bytes answer the cloud (thing.py); setup(app) runs once before."""
    from zeroburn import start

    got = start.boot()
    del start
    unload("start")
    if got is None:
        return
    cfg, hw = got
    del got
    t = (properties or {}, services or {}, rrpc) if properties or services or rrpc else None
    a = App(cfg, hw, Clock(), sensors=sensors, downlink=downlink, thing=t)
    if setup:
        setup(a)
    try:
        a.run()
    except (OSError, ValueError) as e:  # before the watchdog starts: a missing or bad ca.pem
        log("cfg", "E: %s: %r; not starting" % (cfg.ca_file, e))

# The device's life: Wi-Fi, time, register once (regnwl), then connwl telemetry with back-off.
# Phase modules (config, sign, reg) are imported only while needed and then dropped from
# sys.modules (sys is imported for that alone): their code then leaves the GC heap, which a
# 48 KiB heap needs. Nothing here may keep a reference to them (no module-level import).
import gc
import json
import os
import sys

from micropython import const

from zeroburn import creds, net, telemetry
from zeroburn.clock import VALID_AFTER_MS, Clock
from zeroburn.log import log
from zeroburn.mqtt import Client, MQTTException

IO_MS = const(10000)  # TCP connect, TLS handshake, CONNACK, SUBACK, PUBACK, each read
REPLY_MS = const(10000)  # wait for /ext/regnwl after CONNACK 0
WIFI_MS = const(20000)
NET_BASE_MS = const(2000)
NET_CAP_MS = const(300000)
REG_CAP_MS = 6 * 3600 * 1000
IDLE_MS = const(100)  # loop period while online and idle
HEALTHY_MS = const(60000)  # a session this long (or one ack) resets the network back-off


def unload(name):
    """Forget zeroburn.<name> (sys.modules and the package attribute) so the GC frees its code;
    the next import loads it again."""
    sys.modules.pop("zeroburn." + name, None)
    try:
        delattr(sys.modules["zeroburn"], name)
    except (AttributeError, KeyError):
        pass


class Settings:
    """The parsed config's values, with no method: holding it does not keep config.py alive."""


def settings(cfg):
    """config.Config -> Settings (endpoint() evaluated into .endpoint_host); a Settings as is."""
    if isinstance(cfg, Settings):
        return cfg
    s = Settings()
    for k in cfg.__dict__:
        setattr(s, k, getattr(cfg, k))
    s.endpoint_host = cfg.endpoint()
    return s


def jittered(base, n, cap):
    """Exponential back-off with equal jitter: half fixed, half random."""
    d = min(cap, base << min(n, 20))
    return d // 2 + (d // 2) * int.from_bytes(os.urandom(2), "big") // 65536


class App:
    """One device. State that must survive deep sleep lives in buf.meta (RTC memory):
    rf registration failures in a row, cr connwl refusals in a row, rn registrations."""

    def __init__(self, cfg, hw, store, clock, opener=None, sensors=None, downlink=None):
        cfg = self.cfg = settings(cfg)
        self.host = cfg.endpoint_host
        self.hw = hw
        self.store = store
        self.clock = clock
        self.sensors = sensors
        self.on_downlink = downlink
        self.opener = opener or self._open_tls
        # built first, while the heap is still unfragmented: it needs one ~3 KiB block, and a
        # bad ca.pem is reported at boot rather than at the first connection
        gc.collect()
        self.ctx = None if opener else net.tls_context(cfg.ca_file)
        self.io_ms = IO_MS  # instance attributes, so tests can shorten them
        self.reply_ms = REPLY_MS
        from zeroburn import sign

        self.dn = sign.device_name(hw.unique_id(), cfg.device_name_prefix)
        unload("sign")
        self.buf = telemetry.Buffer(cfg.buffer_max)
        self.rec = None
        self.net_fails = 0
        self.synced = False
        self.next_sample = clock.ticks()
        self.ntp_sent = None
        base = "/%s/%s/" % (cfg.product_key, self.dn)
        self.t_up = (base + "user/update").encode()
        self.t_get = (base + "user/get").encode()
        self.t_ntp = "/ext/ntp" + base

    def _open_tls(self):
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
        return jittered(NET_BASE_MS, self.net_fails - 1, NET_CAP_MS)

    def reg_delay(self):
        m = self.buf.meta
        n = m["rf"] = m.get("rf", 0) + 1
        return jittered(self.cfg.reg_backoff_s * 2000, n - 1, REG_CAP_MS)

    def link(self):
        """Wi-Fi up, then the clock set (NTP), before any TLS certificate check."""
        cfg, hw = self.cfg, self.hw
        if not hw.wifi_ok():
            hw.wifi_start(cfg.wifi_ssid, cfg.wifi_password)
            start = self.clock.ticks()
            while not hw.wifi_ok():
                if self.clock.since(start) > WIFI_MS:
                    log("net", "W: wifi %r not up in %d s" % (cfg.wifi_ssid, WIFI_MS // 1000))
                    return False
                self.clock.sleep_ms(200, self.feed)
            log("net", "wifi up, rssi %s" % hw.rssi())
        for _ in range(0 if self.synced else 3):
            self.feed()
            if hw.ntp(cfg.ntp_host):
                log("net", "time set by NTP")
                self.synced = True
                break
        if not self.synced and self.clock.unix_ms() > VALID_AFTER_MS:
            log("net", "W: NTP failed; the clock looks set, going on")
            self.synced = True
        return self.synced

    def register(self):
        """regnwl once; returns the delay before the next step (0: go on to log in)."""
        from zeroburn import sign

        ids = sign.regnwl(self.cfg, self.dn, sign.fresh_random())
        del sign
        unload("sign")  # signing code out before the TLS handshake needs the heap
        gc.collect()
        from zeroburn import reg

        try:
            return reg.register(self, ids)
        finally:
            del ids
            unload("reg")  # only needed again if the token is revoked
            gc.collect()

    def login(self):
        """connwl session; returns the delay before the next step."""
        rec, m = self.rec, self.buf.meta
        from zeroburn import sign

        c = Client(
            *sign.connwl(rec["cid"], self.dn, self.cfg.product_key, rec["tok"]),
            self.cfg.keepalive_s,
            self.opener,
        )
        del sign
        unload("sign")
        gc.collect()
        c.set_callback(self.on_msg)
        try:
            try:
                c.connect()
            except MQTTException as e:
                rc = e.args[0]
                if rc not in (4, 5):
                    log("mqtt", "W: login refused, CONNACK %s" % rc)
                    return self.net_delay()
                # counted in meta, which deep sleep keeps: duty-cycle wakes count too
                k = m["cr"] = m.get("cr", 0) + 1
                n = self.cfg.max_connwl_refusals
                log("mqtt", "W: token refused (CONNACK %d), %d of %d in a row" % (rc, k, n))
                if k < n:
                    return self.net_delay()
                # Only now, never for network errors: every registration burns one of 5 slots.
                log("cred", "W: token revoked: wiping it and registering again")
                m["cr"] = 0
                self.rec = None
                self.store.wipe()
                # A token that worked before was revoked by the operator: register again at
                # once. One refused before it ever worked would burn slots in a loop: wait long.
                return 0 if m.pop("ok", 0) or not m.get("rn") else self.reg_delay()
            m["cr"] = 0
            m["ok"] = 1
            log("mqtt", "online as %s" % self.dn)
            return self.online(c)
        finally:
            c.close()

    def online(self, c):
        t = c.sock
        for topic in (self.t_get, (self.t_ntp + "response").encode()):
            try:
                t.deadline(self.io_ms)
                c.subscribe(topic, 1)
            except MQTTException:  # SUBACK 0x80: no permission; the session stays usable
                log("mqtt", "W: subscribe refused: %s" % topic.decode())
        t.deadline(None)
        self.ntp_sent = self.clock.unix_ms()
        c.publish((self.t_ntp + "request").encode(), b'{"deviceSendTime":"%d"}' % self.ntp_sent)
        start = self.clock.ticks()
        items = self.buf.items
        while True:
            while items:  # oldest first, each acknowledged (QoS 1) before it is dropped
                item = items[0]
                t.deadline(self.io_ms)
                c.publish(self.t_up, item[1], qos=1)
                if self.cfg.alink:
                    prop = "/sys/%s/%s/thing/event/property/post" % (self.cfg.product_key, self.dn)
                    c.publish(prop.encode(), telemetry.alink_post(item[1]), qos=1)
                t.deadline(None)
                if items and items[0] is item:  # a sample taken meanwhile may have pushed it out
                    items.pop(0)
                self.net_fails = 0
                log("tel", "acked #%d" % item[0])
                gc.collect()  # once a message: keeps the heap from fragmenting
            if self.cfg.mode == "duty_cycle":
                return 0
            if self.clock.since(start) > HEALTHY_MS:
                self.net_fails = 0
            c.check_msg()
            c.keep_alive()
            self.clock.sleep_ms(IDLE_MS, self.feed)

    def on_msg(self, topic, msg):
        if topic == self.t_get:
            log("mqtt", "downlink, %d bytes" % len(msg))
            if self.on_downlink:
                self.on_downlink(msg)
        elif topic.endswith(b"/response") and self.ntp_sent is not None:
            # Aliyun /ext/ntp: now = (serverRecvTime + serverSendTime + recv - deviceSendTime)/2
            try:
                d = json.loads(msg)
                recv = self.clock.unix_ms()
                fix = (
                    int(d["serverRecvTime"])
                    + int(d["serverSendTime"])
                    + recv
                    - int(d["deviceSendTime"])
                ) // 2 - recv
                self.clock.offset_ms += fix
                log("net", "time refined by MQTT NTP (%+d ms)" % fix)
            except (ValueError, KeyError, TypeError):
                log("net", "W: bad NTP response")
            self.ntp_sent = None

    def step(self):
        """One pass: link, then register or log in. Returns ms to wait before the next."""
        try:
            if not self.link():
                return self.net_delay()
            return self.register() if self.rec is None else self.login()
        except Exception as e:  # network trouble of any kind: closed already, back off, retry
            log("net", "W: %s %r" % (type(e).__name__, e.args))
            return self.net_delay()
        finally:
            gc.collect()

    def run(self):
        if self.buf.restore(self.hw.rtc_read()):
            log("tel", "%d samples restored from RTC memory" % len(self.buf.items))
            self.hw.rtc_write(b"")
        rec = self.store.load()
        if rec and (rec["pk"], rec["dn"]) != (self.cfg.product_key, self.dn):
            rec = None  # flashed with another product or prefix: that token is not ours
        self.rec = rec
        if rec:
            log("cred", "token loaded for %s (registrations: %d)" % (self.dn, self.store.regs))
        else:
            log("cred", "no token for %s: will register" % self.dn)
        if self.cfg.mode == "duty_cycle":
            return self.wake()
        while True:
            delay = self.step()
            if delay:
                log("app", "retry in %d s" % (delay // 1000))
                self.clock.sleep_ms(delay, self.feed)

    def wake(self):
        """Duty cycle: sample, connect with the stored token, flush, disconnect, deep sleep."""
        try:
            self.link()  # the sample's timestamp wants a set clock
        except Exception as e:
            log("net", "W: %r" % (e,))
        self.sample()
        delay = self.step()
        if not delay and self.buf.items:
            delay = self.step()  # just registered: now log in and send
        self.hw.rtc_write(self.buf.dump())
        sleep = max(self.cfg.interval_s * 1000, delay)
        log("app", "deep sleep %d s" % (sleep // 1000))
        self.hw.deepsleep(sleep)


def run(cfg, hw, store=None, clock=None, opener=None, sensors=None, downlink=None):
    """Everything the app needs is passed in, so tests can hand it fakes."""
    if store is None:
        store = creds.Store(hw.nvs())
    app = App(cfg, hw, store, clock or Clock(), opener, sensors, downlink)
    hw.wdt_start(cfg.wdt_s)
    app.run()
    return app


def main(sensors=None, downlink=None):
    """Entry point from main.py: safe mode, config, then run on the real hardware."""
    try:
        os.stat("safemode")
        log("boot", "safe mode (file 'safemode'): application not started")
        return
    except OSError:
        pass
    from zeroburn import config

    try:
        cfg = settings(config.load())
    except ValueError as e:
        # no watchdog runs yet: the board stays at the REPL instead of retrying
        log("cfg", "E: %s; not starting" % e)
        return
    finally:
        del config
        unload("config")  # parsed once at boot: App keeps only the values
    from zeroburn.hw import Hardware

    hw = Hardware()
    if cfg.safe_mode_pin is not None and hw.safe_mode_pin(cfg.safe_mode_pin):
        log("boot", "safe mode (button held): application not started")
        return
    try:
        run(cfg, hw, sensors=sensors, downlink=downlink)
    except (OSError, ValueError) as e:  # before the watchdog starts: a missing or bad ca.pem
        log("cfg", "E: %s: %r; not starting" % (cfg.ca_file, e))

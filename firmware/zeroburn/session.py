# A connwl session, loaded by app for each login and dropped afterwards: log in with the token,
# subscribe, send the buffered samples oldest first at QoS 1, serve downlink, MQTT NTP and
# keepalive until the link fails. The registration code (reg) is never in the heap with it.
import gc
import json
import os

from micropython import const

from zeroburn import log, telemetry
from zeroburn.app import unload
from zeroburn.mqtt import Client, MQTTException, connwl

# Indices into App.ota (zeroburn.otainit owns the list; docs/ota.md)
_OTA_TOPICS = const(0)
_OTA_INFORM = const(1)
_OTA_OUT = const(3)
_OTA_STATE = const(4)
_OTA_ACK = const(5)
_OTA_MSG = const(6)
_OTA_UNTIL = const(8)

_IDS_BLOCK = const(10000)  # ids reserved at a time: one flash write per 10,000 messages
_IDLE_MS = const(100)  # loop period while online and idle
_HEALTHY_MS = const(60000)  # a session this long (or one ack) resets the network back-off


def run(a):
    """Log App a in (connwl) and stay online; returns the delay before the next step."""
    if a.buf.seq + 100 >= a.buf.meta.get("t", 0):
        ids(a)  # ids above the flash reservation: stored before they go out
    rec = a.rec
    c = Client(
        *connwl(rec["cid"], a.dn, a.cfg.product_key, rec["tok"]), a.cfg.keepalive_s, a.opener
    )
    del rec
    c.set_callback(lambda topic, msg: on_msg(a, topic, msg, c))
    gc.collect()  # what ids() left, freed before the TLS handshake needs the heap
    try:
        try:
            c.connect()
        except MQTTException as e:
            from zeroburn import creds

            return creds.refused(a, e.args[0])
        m = a.buf.meta
        m["cr"] = 0
        m["ok"] = 1
        log("mqtt", "online as %s" % a.dn)
        return online(a, c)
    finally:
        c.close()


def online(a, c):
    t = c.sock
    o = a.ota
    for topic in (a.t_get, (a.t_ntp + "response").encode()) + (o[_OTA_TOPICS] if o else ()):
        try:
            t.deadline(a.io_ms)
            c.subscribe(topic, 1)
        except MQTTException:  # SUBACK 0x80: no permission; the session stays usable
            log("mqtt", "W: subscribe refused: %s" % topic.decode())
    if o:  # OTA: the version at every login (Aliyun pushes only to devices that report it), and
        # what otainit prepared: a confirmation or a report, a firmware/get for a missed push
        t.deadline(a.io_ms)
        c.publish(*o[_OTA_INFORM])
        for m in o[_OTA_OUT]:
            c.publish(m[0], m[1], qos=1)
        o[_OTA_OUT] = ()
        if o[_OTA_STATE]:
            with open("/zb/active.json.tmp", "wb") as f:
                f.write(o[_OTA_STATE][0])
            os.rename("/zb/active.json.tmp", "/zb/active.json")
            log("ota", o[_OTA_STATE][1])
            o[_OTA_STATE] = o[_OTA_UNTIL] = None
    t.deadline(None)
    a.ntp_sent = a.clock.unix_ms()
    c.publish((a.t_ntp + "request").encode(), b'{"deviceSendTime":"%d"}' % a.ntp_sent)
    start = a.clock.ticks()
    cfg = a.cfg
    while True:
        items = a.buf.items
        while items:  # oldest first, each acknowledged (QoS 1) before it is dropped
            item = items[0]
            if item[0] + 100 > a.buf.meta.get("t", 0):
                ids(a)  # the id reservation is nearly used up: the next block, in this session
            t.deadline(a.io_ms)
            # a sample to user/update; an event or message to its suffix under /sys/pk/dn/
            # (thing/...) or /pk/dn/ (custom topics)
            p = a.t_up
            if len(item) > 2:
                p = (b"/sys" if item[2][:6] == b"thing/" else b"") + p[:-11] + item[2]
            c.publish(p, item[1], qos=1)
            if cfg.alink and len(item) < 3:
                prop = "/sys/%s/%s/thing/event/property/post" % (cfg.product_key, a.dn)
                from zeroburn import alink  # stays loaded while alink is on

                c.publish(prop.encode(), alink.post(item[1]), qos=1)
            t.deadline(None)
            if items and items[0] is item:  # a sample taken meanwhile may have pushed it out
                items.pop(0)
            a.buf.meta["a"] = item[0]  # acknowledged up to here (the journal's mark)
            telemetry.save(a)
            a.net_fails = 0
            log("tel", "acked #%d" % item[0])
            gc.collect()  # once a message: keeps the heap from fragmenting
        if cfg.mode == "duty_cycle":
            return 0
        if a.clock.since(start) > _HEALTHY_MS:
            a.net_fails = 0
        c.check_msg()
        if o and o[_OTA_MSG]:  # an upgrade: acknowledged; app resets into the download
            t.deadline(a.io_ms)
            c.publish(o[_OTA_ACK][0], o[_OTA_ACK][1], qos=1)
            os.rename("/zb/job.json.tmp", "/zb/job.json")
            return 0
        c.keep_alive()
        a.clock.sleep_ms(_IDLE_MS, a.feed)


def on_msg(a, topic, msg, c):
    if b"/thing/service/" in topic or b"rrpc/" in topic:
        from zeroburn import thing  # only while a downlink is answered

        try:
            thing.run(a, c, topic, msg)
        finally:
            del thing
            unload("thing")
    elif topic == a.t_get:
        log("mqtt", "downlink, %d bytes" % len(msg))
        if a.on_downlink:
            a.on_downlink(bytes(msg))  # a long msg is a view of the transport's buffer
    elif a.ota and topic in a.ota[_OTA_TOPICS] and len(msg) > 256:
        # An upgrade (a short one is an empty firmware/get reply): to flash as it is, no parsing
        # in a session's fragmented heap; it is done after a reset (zeroburn.otainit).
        with open("/zb/job.json.tmp", "wb") as f:
            f.write(msg)
        a.ota[_OTA_MSG] = 1
    elif topic.endswith(b"/response") and a.ntp_sent is not None:
        # Aliyun /ext/ntp: now = (serverRecvTime + serverSendTime + recv - deviceSendTime) / 2
        try:
            d = json.loads(msg)
            recv = a.clock.unix_ms()
            fix = (
                int(d["serverRecvTime"])
                + int(d["serverSendTime"])
                + recv
                - int(d["deviceSendTime"])
            ) // 2 - recv
            a.clock.offset_ms += fix
            log("net", "time refined by MQTT NTP (%+d ms)" % fix)
        except (ValueError, KeyError, TypeError):
            log("net", "W: bad NTP response")
        a.ntp_sent = None


def ids(a):
    """Message ids that stay unique across cold boots: before ids above the flash reservation
    go out, the next block of _IDS_BLOCK is reserved in flash (a cold boot starts above it; the
    reservation is read back in start.prepare). Runs before the login when fewer than 100 ids
    are left or none was reserved, and in a session before an id that close goes out. In this
    module: a module of its own would cost two qstrs for good (its name and path)."""
    m = a.buf.meta
    top = a.buf.seq + _IDS_BLOCK
    try:
        if a.nvs is not None:
            a.nvs.set_blob("ids", top.to_bytes(4, "big"))
            a.nvs.commit()
        else:
            # file names of more than 10 characters: no qstrs (boards with NVS never load them)
            with open("ids_reserved.tmp", "wb") as f:
                f.write(b"%d" % top)
            os.rename("ids_reserved.tmp", "ids_reserved.txt")
    except OSError as e:  # ids may repeat after the next power cut; keep sending meanwhile
        log("tel", "E: id reservation not stored: %r" % (e,))
        return
    m["t"] = top
    telemetry.save(a)

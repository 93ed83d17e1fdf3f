# OTA at boot (docs/ota.md), loaded once by app (App.phase) and dropped again: the running
# version, the topics and every message the sessions of this boot send for OTA (built now,
# while the heap is roomy: a session's heap is too fragmented to load code or parse a push),
# the probation deadline of a version not confirmed yet, an upgrade received before the reset.
# App.ota is a list, not an object or a dict: on a board every attribute name and dict key is
# interned for good. The indices (const: they cost nothing) are these:
import json
import os
import sys

import otaboot
from micropython import const

from zeroburn import VERSION, log

_TOPICS = const(0)  # to subscribe: (pushes, firmware/get replies)
_INFORM = const(1)  # (topic, payload): the version, sent at every login
_V = const(2)  # the running version
_OUT = const(3)  # [(topic, payload)] for the next login (QoS 1): confirmation, report, get
_STATE = const(4)  # (bytes, log line): the switch to write once _OUT went out, or None
_ACK = const(5)  # (topic, payload): progress 1, the acknowledgement of an upgrade
_MSG = const(6)  # an upgrade message was saved to /zb/job.json.tmp: acknowledge, then reset
_JOB = const(7)  # the upgrade found in /zb/job.json at boot: the ota phase does it
_UNTIL = const(8)  # ticks by which a version on probation must reach the cloud, else None
_BUF = const(9)  # buffer long downlinks are read into (see net.Transport.read)


def post(a, step, m):
    """(topic, payload) of a progress report: step 1..100, or -1 upgrade, -2 download, -3
    verification, -4 flash write failed; m says what happened."""
    topic = "/ota/device/progress/%s/%s" % (a.cfg.product_key, a.dn)
    body = '{"id":"3","params":{"step":"%d","desc":%s,"module":"default"}}' % (step, json.dumps(m))
    return topic.encode(), body.encode()


def run(a):
    try:
        boot(a)
    finally:
        sys.modules.pop("otaboot", None)


def boot(a):
    d = otaboot.read()
    try:  # a report the ota phase left: into the switch, which keeps it until it is sent
        with open("/zb/report.json") as f:
            d["r"] = json.loads(f.read())
        otaboot.write(d)
        os.remove("/zb/report.json")
    except (OSError, ValueError):
        pass
    v = d.get("v") or VERSION
    pk, dn = a.cfg.product_key, a.dn
    out = [
        (
            ("/sys/%s/%s/thing/ota/firmware/get" % (pk, dn)).encode(),
            b'{"id":"2","version":"1.0","params":{"module":"default"},'
            b'"method":"thing.ota.firmware.get"}',
        )
    ]
    state = None
    if "t" in d:
        # the first cloud session on the new version confirms it
        out.insert(0, post(a, 100, "running version %s" % v))
        state = json.dumps({"v": v, "b": d.get("b") or ""}), "%s confirmed" % v
    elif d.get("r"):
        r = d.pop("r")
        out.insert(0, post(a, r[0], r[1]))
        state = json.dumps(d), "progress %d reported: %s" % (r[0], r[1])
    a.ota = o = [
        (
            ("/ota/device/upgrade/%s/%s" % (pk, dn)).encode(),
            ("/sys/%s/%s/thing/ota/firmware/get_reply" % (pk, dn)).encode(),
        ),
        (
            ("/ota/device/inform/%s/%s" % (pk, dn)).encode(),
            ('{"id":"1","params":{"version":"%s","module":"default"}}' % v).encode(),
        ),
        v,
        out,
        state and (state[0].encode(), state[1]),
        post(a, 1, "accepted: restarting to download"),
        None,
        None,
        None,
        a.ota,  # the buffer app allocated at boot (None on the boot that registers)
    ]
    try:
        os.mkdir("/zb/job.json"[:3])  # a slice: "/zb" as a literal would be interned for good
    except OSError:
        pass
    if "t" in d:
        o[_UNTIL] = a.clock.add(a.clock.ticks(), d.get("s", 600) * 1000)
        log("ota", "running %s on probation (%d s to reach the cloud)" % (v, d.get("s", 600)))
    else:
        log("ota", "running version %s" % v)
    # an upgrade received before the reset: used once (after a power cut in its download, the
    # firmware/get of the next login brings it again)
    try:
        with open("/zb/job.json") as f:
            m = f.read()
        os.remove("/zb/job.json")
        j = json.loads(m)["data"]
        if (
            j.get("url")
            and j.get("version") not in (None, v)
            and j.get("module", "default") == ("default")
        ):
            o[_JOB] = j
            out.pop()  # no firmware/get: it is being done
            log("ota", "upgrade to %s" % j["version"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass

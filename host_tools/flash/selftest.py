# `zeroburn selftest`: on a real board, over one mpremote link, the checks the emulator can only
# imitate: chip id, NVS and its error codes, RTC memory across a soft reset, Wi-Fi, DNS, NTP, a
# verified TLS handshake to the configured endpoint with the board's ca.pem, free heap, the
# MicroPython build, and the watchdog last. Prints a report to paste into an issue: no secret
# (no password, product secret, token) ever leaves the board; the code below reads them there.
#
# The watchdog cannot be stopped once armed (FACTS.md). So it is checked last: armed with a
# short timeout and fed for longer than that timeout (the board would reset if feeding did not
# work), and then the self-test resets the board itself (machine.reset()), which clears it; the
# board then boots its firmware as after `zeroburn flash`. The report says so.
import json
import time

from host_tools.build import boards
from host_tools.errors import ZeroburnError
from host_tools.flash.info import check_runtime, device_name
from host_tools.flash.link import BoardLink

# ESP-IDF codes as the ESP32 port raises them (negated; FACTS.md "The ESP32 port").
NVS_NOT_FOUND = -4354
NVS_INVALID_LENGTH = -4364
WDT_TIMEOUT_MS = 2000
WDT_FED_MS = 3500  # longer than the timeout: only feeding keeps the board alive
WIFI_WAIT_S = 20
RTC_MARK = b"zeroburn-selftest"

_PRELUDE = """\
import json, gc
def _out(ok, detail, **kw):
    kw["ok"] = ok
    kw["detail"] = detail
    print(json.dumps(kw))
"""

CHECKS = {}


def check(name, title):
    def wrap(code):
        CHECKS[name] = (title, code)
        return code

    return wrap


VERSION = check("micropython", "MicroPython version and build")(
    """\
import sys, os
u = os.uname()
_out(True, "%s; %s" % (sys.version, u.machine), release=u.release, version=u.version,
     machine=u.machine, mpy=getattr(sys.implementation, "_mpy", 0) & 0xff)
"""
)

HEAP = """\
gc.collect()
_out(True, "%d bytes free" % gc.mem_free(), free=gc.mem_free())
"""

NVS = check("nvs", "NVS write, read, erase and error codes")(
    """\
import esp32
n = esp32.NVS("zbselftest")
n.set_blob("k", b"0123456789")
n.commit()
b = bytearray(16)
k = n.get_blob("k", b)
got = bytes(b[:k])
try:
    n.get_blob("k", bytearray(4))
    short = None
except OSError as e:
    short = e.args[0]
n.erase_key("k")
n.commit()
try:
    n.get_blob("k", b)
    missing = None
except OSError as e:
    missing = e.args[0]
ok = got == b"0123456789" and short == %(short)d and missing == %(missing)d
_out(ok, "read back %%s; short buffer OSError(%%s), erased key OSError(%%s)" %% (
    "the same bytes" if got == b"0123456789" else repr(got), short, missing),
    short=short, missing=missing)
"""
    % {"short": NVS_INVALID_LENGTH, "missing": NVS_NOT_FOUND}
)

RTC_WRITE = """\
import machine
r = machine.RTC()
old = bytes(r.memory())
r.memory(%(mark)r)
_out(True, "written", old=old.hex())
"""

RTC_READ = """\
import machine, binascii
r = machine.RTC()
got = bytes(r.memory())
r.memory(binascii.unhexlify(%(old)r))
_out(got == %(mark)r, "kept across a soft reset" if got == %(mark)r else "lost: %%r" %% got[:32])
"""

IDENTITY = check("chip", "chip id")(
    """\
import machine, binascii
u = machine.unique_id()
_out(len(u) == 6, "%d-byte unique id" % len(u), uid=binascii.hexlify(u).decode())
"""
)

# The board's own settings, read on the board with the firmware's own schema; only the
# endpoint (host, port, ca file, NTP host) is ever printed.
SETTINGS = """\
from zeroburn import config
s = config.settings(config.load())
"""

WIFI = check("wifi", "Wi-Fi up")(
    SETTINGS
    + """\
import network, time
w = network.WLAN(network.STA_IF)
w.active(True)
if not w.isconnected():
    w.connect(s.wifi_ssid, s.wifi_password)
t = time.ticks_ms()
while not w.isconnected() and time.ticks_diff(time.ticks_ms(), t) < %(ms)d:
    time.sleep_ms(100)
if w.isconnected():
    try:
        rssi = w.status("rssi")
    except Exception:
        rssi = None
    _out(True, "connected in %%d ms, RSSI %%s dBm, IP %%s" %% (
        time.ticks_diff(time.ticks_ms(), t), rssi, w.ifconfig()[0]))
else:
    _out(False, "not connected after %%d s (status %%s): check wifi_ssid/wifi_password" %% (
        %(ms)d // 1000, w.status()))
"""
    % {"ms": WIFI_WAIT_S * 1000}
)

DNS = check("dns", "DNS")(
    SETTINGS
    + """\
import socket
h = s.endpoint_host
try:
    a = socket.getaddrinfo(h, s.port)[0][-1]
    # a (host, port) tuple on the ESP32 port, a raw sockaddr on the unix port
    ip = a[0] if isinstance(a, tuple) else ".".join(str(b) for b in a[4:8])
    _out(True, "%s -> %s" % (h, ip), host=h, ip=ip)
except OSError as e:
    _out(False, "%s: %r" % (h, e), host=h)
"""
)

NTP = check("ntp", "NTP")(
    SETTINGS
    + """\
import ntptime, time
ntptime.host = s.ntp_host
try:
    ntptime.settime()
    y = time.localtime()[0]
    _out(y >= 2024, "%s: clock set to %d-%02d-%02d %02d:%02d:%02d UTC" % (
        (s.ntp_host,) + time.localtime()[:6]))
except (OSError, OverflowError, IndexError) as e:
    _out(False, "%s: %r" % (s.ntp_host, e))
"""
)

TLS = check("tls", "verified TLS handshake to the endpoint")(
    SETTINGS
    + """\
from zeroburn import start, net
import time
t = time.ticks_ms()
try:
    ctx = start.tls_context(s.ca_file)
    c = net.open_tls(ctx, s.endpoint_host, s.port, 10000, lambda: None)
    c.close()
    _out(True, "%s:%d, certificate and host name checked against %s, %d ms" % (
        s.endpoint_host, s.port, s.ca_file, time.ticks_diff(time.ticks_ms(), t)))
except Exception as e:
    _out(False, "%s:%d with %s: %r" % (s.endpoint_host, s.port, s.ca_file, e))
"""
)

WATCHDOG = check("watchdog", "watchdog armed and fed")(
    """\
import machine, time
w = machine.WDT(timeout=%(timeout)d)
t = time.ticks_ms()
while time.ticks_diff(time.ticks_ms(), t) < %(fed)d:
    w.feed()
    time.sleep_ms(100)
_out(True, "armed at %(timeout)d ms, fed for %(fed)d ms without a reset")
"""
    % {"timeout": WDT_TIMEOUT_MS, "fed": WDT_FED_MS}
)

ORDER = ("micropython", "chip", "nvs", "rtc", "wifi", "dns", "ntp", "tls", "heap", "watchdog")
TITLES = {
    **{k: v[0] for k, v in CHECKS.items()},
    "rtc": "RTC memory across a soft reset",
    "heap": "free heap before and after",
}


class Run:
    def __init__(self, link):
        self.link = link
        self.results = {}

    def board(self, code):
        """Run code on the board; its last line of output is the result (JSON)."""
        try:
            return self.link.json(_PRELUDE + code)
        except ZeroburnError as e:
            return {"ok": False, "detail": str(e).replace("the board refused a command: ", "")}

    def add(self, name, result):
        self.results[name] = result
        return result


def selftest(device, board_name, say=None):
    """Run every check; returns the report (a dict). ZeroburnError when the board cannot be
    reached or is not the board named."""
    board = boards.load(board_name)
    say = say or (lambda text: None)
    link = BoardLink(device).open()
    started = time.monotonic()
    try:
        link.enter()
        facts = link.facts()
        check_runtime(facts, board)
        r = Run(link)
        if not board.virtual:
            link.arm_watchdog()  # a firmware watchdog may be running: give the checks time
        before = r.board(HEAP)
        say("micropython")
        r.add("micropython", r.board(VERSION))
        say("chip")
        chip = r.add("chip", r.board(IDENTITY))
        if chip.get("uid"):
            chip["device_name"] = device_name(chip["uid"], "")
            chip["detail"] += f" {chip['uid']}, deviceName {chip['device_name']}"
            chip["detail"] += f", chip {board.chip} ({facts.get('machine') or '?'})"
        say("nvs")
        r.add("nvs", r.board(NVS))
        say("rtc")
        w = r.board(RTC_WRITE % {"mark": RTC_MARK})
        if w.get("ok"):
            link.enter()  # a soft reset (Ctrl-D), as mpremote does
            r.add("rtc", r.board(RTC_READ % {"mark": RTC_MARK, "old": w["old"]}))
        else:
            r.add("rtc", w)
        has_fw = link.info().get("fw")
        for name in ("wifi", "dns", "ntp", "tls"):
            say(name)
            if not has_fw:
                r.add(
                    name,
                    {
                        "ok": False,
                        "detail": "no zeroburn firmware and config.json on the "
                        "board: run `zeroburn flash` first (the checks use its settings)",
                    },
                )
                continue
            res = r.add(name, r.board(CHECKS[name][1]))
            if name == "wifi" and not res["ok"]:
                for rest in ("dns", "ntp", "tls"):
                    r.add(rest, {"ok": False, "detail": "skipped: no Wi-Fi"})
                break
        after = r.board(HEAP)
        heap_ok = bool(before.get("ok") and after.get("ok"))
        r.add(
            "heap",
            {
                "ok": heap_ok,
                "detail": f"{before.get('free')} bytes free before, {after.get('free')} after"
                if heap_ok
                else after.get("detail") or before.get("detail"),
                "before": before.get("free"),
                "after": after.get("free"),
            },
        )
        say("watchdog")
        r.add("watchdog", r.board(WATCHDOG))
        link.reset()  # the watchdog cannot be stopped: a reset clears it
    finally:
        link.close()
    results = r.results
    return {
        "device": device,
        "board": board.name,
        "chip": board.chip,
        "zeroburn": has_fw,
        "micropython": results["micropython"].get("detail"),
        "seconds": round(time.monotonic() - started, 1),
        "checks": {name: results[name] for name in ORDER if name in results},
        "ok": all(results[name]["ok"] for name in ORDER if name in results),
        "reset": True,
    }


def format_report(rep):
    lines = [
        "zeroburn selftest",
        f"board        {rep['board']} ({rep['chip']}) on {rep['device']}",
        f"micropython  {rep['micropython']}",
        f"firmware     zeroburn {rep['zeroburn']}" if rep["zeroburn"] else "firmware     none",
        "",
    ]
    width = max(len(TITLES[n]) for n in rep["checks"])
    for name, res in rep["checks"].items():
        mark = "PASS" if res["ok"] else "FAIL"
        lines.append(f"{mark}  {TITLES[name]:<{width}}  {res['detail']}")
    passed = sum(1 for res in rep["checks"].values() if res["ok"])
    lines += [
        "",
        f"{passed} of {len(rep['checks'])} checks passed in {rep['seconds']:g} s; the board was "
        "reset at the end (a running watchdog cannot be stopped) and boots its firmware again.",
        "No secrets in this report: paste it into an issue as it is.",
    ]
    return "\n".join(lines)


def _selftest(args):
    import sys

    def say(name):
        print(f"selftest: {TITLES[name]} ...", file=sys.stderr, flush=True)

    rep = selftest(args.device, args.board, say=None if args.json else say)
    if args.json:
        print(json.dumps(rep))
    else:
        print(format_report(rep))
    return 0 if rep["ok"] else 1

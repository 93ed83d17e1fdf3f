# Boot phase, loaded once by app and then dropped from the heap: safe mode, config, hardware,
# the TLS context, the device name, samples kept in RTC memory, the stored token, the
# watchdog.
import binascii
import gc
import json
import os
import ssl
import sys

from zeroburn import log, unload


def boot():
    """(settings, hardware) to run with, or None: safe mode or a bad config (reported; the
    board then stays at the REPL rather than retrying)."""
    try:
        os.stat("safemode")
        log("boot", "safe mode (file 'safemode'): application not started")
        return None
    except OSError:
        pass
    from zeroburn import config

    # an update that carries config.json or ca.pem has them in its folder, first on sys.path
    # (otaboot, docs/ota.md); the root's own are never overwritten
    p = sys.path[0] + "/"
    try:
        cfg = config.settings(config.load(find(p + "config.json")))
        cfg.ca_file = find(p + cfg.ca_file)
    except ValueError as e:
        log("cfg", "E: %s; not starting" % e)
        return None
    del config
    unload("config")  # parsed once at boot: the app keeps only the values
    from zeroburn.hw import Hardware

    hw = Hardware()
    pin = cfg.safe_mode_pin
    if pin is not None:
        try:
            held = hw.safe_mode_pin(pin)
        except ValueError as e:  # no such GPIO on this chip: `config check --board` refuses it
            log("boot", "W: safe_mode_pin %d: %s; no safe-mode button" % (pin, e))
            held = False
        if held:
            log("boot", "safe mode (button held): application not started")
            return None
    return cfg, hw


def find(path):
    """path if it exists, else the same name at the root."""
    try:
        os.stat(path)
        return path
    except OSError:
        return path[path.rfind("/") + 1 :]


def prepare(a):
    """Everything App a needs once before its first connection. A missing or bad ca.pem raises
    here, before the watchdog starts."""
    cfg, hw = a.cfg, a.hw
    gc.collect()
    # mbedTLS seeds its random generator (CTR-DRBG) when the context is made, and ESP-IDF's
    # RNG is only truly random with the RF subsystem on: the radio first (no connection yet).
    hw.radio_on()
    # then the context, while the heap is still unfragmented: it needs one ~3 KiB block (and a
    # bad ca.pem is reported at boot, whatever opener the app was given)
    a.ctx = tls_context(cfg.ca_file)
    from zeroburn import sign

    a.dn = sign.device_name(hw.unique_id(), cfg.device_name_prefix)
    del sign
    unload("sign")
    base = "/%s/%s/" % (cfg.product_key, a.dn)
    a.t_up = (base + "user/update").encode()
    a.t_get = (base + "user/get").encode()
    a.t_ntp = "/ext/ntp" + base
    a.nvs = hw.nvs()
    # the queue RTC memory kept; after a cold boot ids go on above the last reservation
    # (session.ids)
    warm = restore(a.buf, hw.rtc_read())
    if warm:
        log("tel", "%d samples restored from RTC memory" % len(a.buf.items))
    else:
        top = 0
        try:
            if a.nvs is not None:
                buf = bytearray(4)
                a.nvs.get_blob("ids", buf)
                top = int.from_bytes(buf, "big")
            else:
                with open("ids_reserved.txt") as f:
                    top = int(f.read())
        except (OSError, ValueError):
            pass
        a.buf.seq = max(a.buf.seq, top)
        a.buf.meta["t"] = top
    if cfg.journal_s:  # and what the flash journal kept (a path, not a name: no qstr)
        __import__("zeroburn.journal", None, None, ("load",)).load(a, warm)
    hw.rtc_write(a.buf.dump())
    from zeroburn import creds

    store = creds.Store(a.nvs)
    rec = store.load()
    a.regs = store.regs
    del store, creds
    unload("creds")
    if rec and (rec["pk"], rec["dn"]) != (cfg.product_key, a.dn):
        rec = None  # flashed with another product or prefix: that token is not ours
    a.rec = rec
    if rec:
        log("cred", "token loaded for %s (registrations: %d)" % (a.dn, a.regs))
    else:
        log("cred", "no token for %s: will register" % a.dn)
    hw.wdt_start(cfg.wdt_s)


def tls_context(ca_file):
    """A client context that checks the server against each root of a PEM bundle."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    # MicroPython's fresh context verifies nothing (verify_mode 0): ask for it explicitly.
    ctx.verify_mode = ssl.CERT_REQUIRED
    n = 0
    b64 = None
    with open(ca_file) as f:
        for line in f:  # line by line: a bundle of several roots never sits in RAM whole
            line = line.strip()
            if line == "-----BEGIN CERTIFICATE-----":
                b64 = []
            elif line == "-----END CERTIFICATE-----" and b64 is not None:
                # DER only, one call per root: the calls accumulate, concatenated DER does not
                ctx.load_verify_locations(cadata=binascii.a2b_base64("".join(b64)))
                b64 = None
                n += 1
            elif b64 is not None:
                b64.append(line)
    if not n:
        raise ValueError("%s holds no PEM certificate" % ca_file)
    return ctx


def restore(buf, blob):
    """Take back what telemetry.Buffer.dump() saved into Buffer buf; False (buf untouched)
    when the blob is absent, torn or random (a cold boot)."""
    try:
        n = len(blob)
        if n < 13 or blob[0] != 0x5A or blob[1] != 0x51 or blob[2] != 2:
            return False
        mv = memoryview(blob)
        if binascii.crc32(mv[: n - 4]) != int.from_bytes(blob[n - 4 :], "big"):
            return False
        i = 5 + (blob[3] << 8 | blob[4])
        d = json.loads(bytes(mv[5:i]))
        items = []
        while i < n - 4:
            s = int.from_bytes(blob[i : i + 4], "big")
            tl = blob[i + 4]
            pl = blob[i + 5] << 8 | blob[i + 6]
            i += 7
            t = bytes(mv[i : i + tl])
            i += tl
            items.append((s, bytes(mv[i : i + pl]), t) if tl else (s, bytes(mv[i : i + pl])))
            i += pl
        seq, dropped, meta = int(d["n"]), int(d["d"]), dict(d["m"])
    except (ValueError, KeyError, TypeError, IndexError, AttributeError):
        return False
    buf.seq, buf.dropped, buf.meta = seq, dropped, meta
    for it in items:
        buf.items.append(it)
    return True

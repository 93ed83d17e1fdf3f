# Link phase, loaded by app before each connection and dropped afterwards: Wi-Fi up (bounded),
# the TLS context (re)built once the radio is on, then the clock set by NTP, since TLS
# certificate checks need the date.
import binascii
import gc
import ssl

from micropython import const

from zeroburn import log

_WIFI_MS = const(20000)


def run(a):
    """Wi-Fi up, then the clock set (NTP), before any TLS certificate check."""
    cfg, hw = a.cfg, a.hw
    if not hw.wifi_ok():
        hw.wifi_start(cfg.wifi_ssid, cfg.wifi_password)
        start = a.clock.ticks()
        while not hw.wifi_ok():
            if a.clock.since(start) > _WIFI_MS:
                # the driver keeps reconnecting by itself: the next pass just waits again
                log("net", "W: wifi %r not up in %d s" % (cfg.wifi_ssid, _WIFI_MS // 1000))
                return False
            a.clock.sleep_ms(200, a.feed)
        log("net", "wifi up, rssi %s" % hw.rssi())
    if not a.ctx_rf:
        # mbedTLS seeds its DRBG when a context is made, and ESP-IDF's RNG is only truly random
        # with the radio on: the boot context (built early for the heap's sake) is replaced by
        # one made now, into the hole it leaves
        a.ctx = None
        gc.collect()
        a.ctx = tls_context(cfg.ca_file)
        a.ctx_rf = True
    for _ in range(0 if a.synced else 3):
        a.feed()
        if hw.ntp(cfg.ntp_host):
            log("net", "time set by NTP")
            a.synced = True
            break
    if not a.synced:  # every ntptime error (OSError, ValueError, ...) ends up here
        if a.clock.unix_ms() > 1735689600000:  # 2025-01-01: never set before
            log("net", "W: NTP failed; the clock looks set, going on")
            a.synced = True
        else:
            log("net", "W: NTP failed; no TLS before the clock is set")
    return a.synced


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

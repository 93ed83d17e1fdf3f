# Link phase, loaded by app before each connection and dropped afterwards: Wi-Fi up (bounded),
# then the clock set by NTP, since TLS certificate checks need the date.
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

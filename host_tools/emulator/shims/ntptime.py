# `ntptime` against the host's clock: what an NTP server would say, reachable only when the
# virtual Wi-Fi is up and the board is not partitioned (then it times out like a lost UDP reply).
import time

import zbboard

host = "pool.ntp.org"
timeout = 1

NTP_DELTA = 3155673600  # 1900 -> 2000, as the ESP32 port's ntptime uses


def time_ntp():
    return _fetch() + NTP_DELTA


def _fetch():
    if zbboard.ctl("wifi", "up") != "up" or zbboard.ctl("partition", "off") == "on":
        time.sleep_ms(int(timeout * 1000))
        raise OSError(110)  # ETIMEDOUT: the UDP reply never came
    return int(zbboard.host_time() - time.EPOCH_2000)


def settime():
    time._set(_fetch())

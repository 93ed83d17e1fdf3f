# `ntptime` against the host's clock: what an NTP server would say, reachable only when the
# virtual Wi-Fi is up and the board is not partitioned (then it times out like a lost UDP reply).
# As the port's ntptime.py: its DNS lookup is not bounded by `timeout` (a stalled DNS takes
# lwIP's own time, see socket.py), and a short reply raises ValueError from struct.unpack.
import socket
import time

import zbboard

host = "pool.ntp.org"
timeout = 1

NTP_DELTA = 3155673600  # 1900 -> 2000, as the ESP32 port's ntptime uses


def time_ntp():
    return _fetch() + NTP_DELTA


def _fetch():
    if zbboard.ctl("wifi", "up") != "up":
        time.sleep_ms(int(timeout * 1000))
        raise OSError(-202)  # no Wi-Fi, no DNS
    socket.dns_wait()
    if zbboard.ctl("partition", "off") == "on" or zbboard.ctl("ntp") == "lost":
        time.sleep_ms(int(timeout * 1000))
        raise OSError(116)  # ETIMEDOUT (newlib's): the UDP reply never came
    if zbboard.ctl("ntp") == "short":
        raise ValueError("buffer too small")  # struct.unpack("!I", msg[40:44]) of a short reply
    return int(zbboard.host_time() - time.EPOCH_2000)


def settime():
    time._set(_fetch())

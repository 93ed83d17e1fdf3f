# `socket` for a virtual board: host names resolve through the board's host map (like
# /etc/hosts), so a config naming Aliyun's endpoint reaches the local platform; every loopback
# connection goes through the host's per-board link, where Wi-Fi and partition faults happen.
import network
import usocket
import zbboard
from usocket import *  # noqa: F401,F403

_DNS_FAIL = -202  # what lwIP's getaddrinfo raises on the ESP32 port when a name does not resolve


def _match(pattern, host):
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and len(host) > len(pattern) - 1
    return pattern == host


def resolve(host):
    """The address the host map gives `host`, an IP literal as is, else None."""
    parts = host.split(".")
    if len(parts) == 4 and all(p.isdigit() for p in parts):
        return host
    table = zbboard.ctl("hosts", "") or ""
    for line in table.split("\n"):
        fields = line.split()
        if len(fields) == 2 and _match(fields[0], host):
            return fields[1]
    return None


def dns_wait():
    """A DNS server that never answers: lwIP's getaddrinfo blocks (no timeout of its own, no
    watchdog feed) through its retries, then fails. How long is the emulator setting
    `dns_stall_ms` (default 14000: lwIP's DNS_MAX_RETRIES 4 at 1+1+2+3 s, for two servers)."""
    if zbboard.ctl("dns") != "stall":
        return
    left = int(zbboard.ctl("dns_stall_ms", "14000"))
    while left > 0:
        zbboard.checkpoint()
        zbboard.sleep_ms(min(left, 100))
        left -= 100
    raise OSError(_DNS_FAIL)


def getaddrinfo(host, port, af=0, type=0, proto=0, flags=0):
    if not network._linked():
        raise OSError(_DNS_FAIL)  # no Wi-Fi, no DNS
    if resolve(host) != host:  # a name, not an IP literal: it goes to the DNS server
        dns_wait()
    addr = resolve(host)
    if addr is None:
        raise OSError(_DNS_FAIL)
    if addr == "127.0.0.1":
        port = zbboard.proxy_port(port)
    return usocket.getaddrinfo(addr, port, af, type, proto, flags)

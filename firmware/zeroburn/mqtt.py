# umqtt.simple with our own connect(): verified TLS through a deadline-bounded transport.
import errno
import struct
import time

from umqtt.simple import MQTTClient, MQTTException  # noqa: F401  (re-exported)


def connwl(client_id, dn, pk, token):
    """(client id, username, password) for the token login (no HMAC: the token is the password)."""
    return client_id + "|securemode=-2,authType=connwl|", dn + "&" + pk, token


def connect_packet(client_id, user, password, keepalive, clean=True):
    """MQTT 3.1.1 CONNECT; strings are sent as UTF-8 (umqtt 1.3.4 would send len(str))."""
    flags = 0xC0 | (2 if clean else 0)
    body = b"\x00\x04MQTT\x04" + bytes((flags, keepalive >> 8, keepalive & 0xFF))
    for s in (client_id, user, password):
        if isinstance(s, str):
            s = s.encode()
        body += struct.pack("!H", len(s)) + s
    head = bytearray(b"\x10")
    n = len(body)
    while True:
        head.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(head) + body


class Client(MQTTClient):
    """publish/subscribe/wait_msg/check_msg/ping/disconnect stay umqtt's (1.3.4 or current).

    `opener()` returns a connected net.Transport; umqtt then reads and writes through it, so
    every wait it does is bounded without forking it.
    """

    def __init__(self, client_id, user, password, keepalive, opener):
        super().__init__(client_id, "-", 0, user, password, keepalive)
        self.opener = opener

    def publish(self, topic, msg, retain=False, qos=0):
        # umqtt.simple does `self.pid += 1` and sends it, never wrapping: the 65,536th would go
        # out as 0 (struct truncates), whose PUBACK never matches. Ids run 1..65535 here.
        if self.pid > 65534:
            self.pid = 0
        return super().publish(topic, msg, retain, qos)

    def connect(self, clean_session=True, timeout=None):
        """opener() (DNS, TCP, TLS under one deadline), CONNECT, CONNACK under the same one."""
        self.sock = self.opener()
        self.sock.write(connect_packet(self.client_id, self.user, self.pswd, self.keepalive))
        resp = self.sock.read(4)
        self.sock.deadline(None)
        if resp[0] != 0x20 or resp[1] != 2:
            raise OSError(errno.ECONNABORTED)  # not a CONNACK
        if resp[3]:
            raise MQTTException(resp[3])
        return resp[2] & 1

    def keep_alive(self):
        """PINGREQ when the link has been quiet for keepalive/2; OSError once it has been silent
        for a whole keepalive (a PINGRESP would have come), so a dead link is seen in time."""
        t = self.sock
        now = time.ticks_ms()
        ka = self.keepalive * 1000
        rx = time.ticks_diff(now, t.rx)
        tx = time.ticks_diff(now, t.tx)
        if rx > ka:
            raise OSError(errno.ETIMEDOUT)
        if tx >= ka // 2 or (rx >= ka // 2 and tx >= ka // 4):
            self.ping()

    def close(self):
        """Best-effort DISCONNECT, then always close: never two TLS sessions at once."""
        if self.sock:
            try:
                self.sock.until = None
                self.sock.write(b"\xe0\x00")
            except OSError:
                pass
            self.sock.close()
            self.sock = None

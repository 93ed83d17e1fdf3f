# Verified TLS connections (start.tls_context() builds the context) and the deadline-bounded
# socket-like object umqtt.simple reads and writes through.
import select
import socket
import time

from micropython import const

_SLICE_MS = const(500)  # longest poll between watchdog feeds
_MAX_READ = const(4096)  # one read never allocates more: a huge packet is an error, not a crash
_SMALL = const(256)  # longer reads go into .buf when the owner gave one (see read)


def open_tls(ctx, host, port, ms, feed):
    """TCP connect + TLS handshake (certificate and host name checked), both bounded."""
    addr = socket.getaddrinfo(host, port)[0][-1]
    raw = socket.socket()
    try:
        # the raw socket's timeout bounds connect() and every step of the blocking handshake
        raw.settimeout(ms / 1000)
        raw.connect(addr)
        feed()
        sock = ctx.wrap_socket(raw, server_hostname=host)
    except BaseException:
        raw.close()
        raise
    feed()
    # from here on the socket never blocks: every wait is a poll with a deadline
    sock.setblocking(False)
    return Transport(sock, ms, feed)


class Transport:
    """MicroPython stream semantics with deadlines, handed to umqtt as its .sock.

    read(n) returns exactly n bytes or raises OSError (deadline, EOF); in non-blocking mode
    (umqtt's check_msg) read returns None when nothing is waiting. `until` (ticks) caps every
    wait of a whole exchange, e.g. publish + PUBACK.
    """

    def __init__(self, sock, ms, feed):
        self.sock = sock
        self.timeout = ms  # each read or write, in ms
        self.feed = feed
        self.blocking = True
        self.until = None
        self.poller = select.poll()
        self.rx = self.tx = time.ticks_ms()  # last traffic each way, for keepalive decisions
        self.buf = None  # allocated at boot by the owner: long messages are read into it

    def setblocking(self, blocking):
        self.blocking = blocking

    def deadline(self, ms):
        """Cap every wait from now until deadline(None) at ms in total."""
        self.until = None if ms is None else time.ticks_add(time.ticks_ms(), ms)

    def _wait(self, event, start):
        now = time.ticks_ms()
        left = self.timeout - time.ticks_diff(now, start)
        if self.until is not None:
            left = min(left, time.ticks_diff(self.until, now))
        if left <= 0:
            raise OSError(110)  # ETIMEDOUT
        self.feed()
        self.poller.register(self.sock, event)
        self.poller.poll(min(left, _SLICE_MS))

    def read(self, n):
        if n > _MAX_READ:
            raise OSError(90)  # EMSGSIZE: bigger than anything this device accepts
        if n > _SMALL and self.buf is not None and n <= len(self.buf):
            # A view of .buf, valid until the next long read: a session's heap is too
            # fragmented for one contiguous block the size of an OTA push (~700 bytes).
            self.readinto(self.buf, n)
            return memoryview(self.buf)[:n]
        start = time.ticks_ms()
        data = b""
        while len(data) < n:
            # Read before polling: TLS may already hold decrypted bytes the fd poll cannot see.
            chunk = self.sock.read(n - len(data))
            if chunk:
                data += chunk
                self.rx = time.ticks_ms()
            elif chunk is not None:
                raise OSError(104)  # ECONNRESET: the peer closed
            elif not data and not self.blocking:
                return None
            else:
                self._wait(select.POLLIN, start)
        return data

    def readinto(self, buf, n=None):
        """Exactly n (default: len(buf)) bytes into buf, allocating nothing."""
        n = n or len(buf)
        mv = memoryview(buf)
        got = 0
        start = time.ticks_ms()
        while got < n:
            k = self.sock.readinto(mv[got:n])
            if k:
                got += k
                self.rx = time.ticks_ms()
            elif k is not None:
                raise OSError(104)  # ECONNRESET: the peer closed
            else:
                self._wait(select.POLLIN, start)
        return n

    def write(self, buf, n=None):
        mv = memoryview(buf)[: len(buf) if n is None else n]
        sent = 0
        start = time.ticks_ms()
        while sent < len(mv):
            k = self.sock.write(mv[sent:])
            if k:
                sent += k
            else:
                self._wait(select.POLLOUT, start)
        self.tx = time.ticks_ms()
        return sent

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

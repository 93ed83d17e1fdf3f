# Verified TLS connections (start.tls_context() builds the context) and the deadline-bounded
# socket-like object umqtt.simple reads and writes through. Errors carry the port's own errno
# values (the errno module: newlib's on ESP32, ETIMEDOUT 116; Linux's on unix and CPython).
import errno
import select
import socket
import time

from micropython import const

_SLICE_MS = const(500)  # longest poll between watchdog feeds
_MAX_READ = const(4096)  # one read never allocates more: a huge packet is an error, not a crash
_SMALL = const(256)  # longer reads go into .buf when the owner gave one (see read)


def open_tls(ctx, host, port, ms, feed, timeout=None):
    """DNS, TCP connect and TLS handshake (certificate and host name checked) under one
    deadline of `timeout` ms (default: ms), fed between steps and in every wait. The returned
    Transport keeps that deadline set: the handshake completes on the first write (the MQTT
    CONNECT), and the CONNACK read is bounded by it too, until the caller's deadline(None).

    Only DNS cannot be cut short: on ESP32 getaddrinfo is a blocking lwIP call with lwIP's
    own retry bound, so config keeps wdt_s above connect_s (docs/firmware-hardening.md)."""
    until = time.ticks_add(time.ticks_ms(), timeout or ms)
    feed()
    addr = socket.getaddrinfo(host, port)[0][-1]
    feed()
    raw = socket.socket()
    try:
        t = Transport(raw, ms, feed)
        t.until = until
        raw.setblocking(False)
        try:
            raw.connect(addr)
        except OSError as e:  # in progress: wait until writable, in fed slices
            if e.args[0] != errno.EINPROGRESS:
                raise
        start = time.ticks_ms()
        while not t._wait(select.POLLOUT, start):  # raises at the deadline (DNS counts too)
            pass
        # no handshake here: it is driven by the transport's non-blocking writes and reads,
        # each wait a poll under the deadline (a blocking one waits per read, with no bound)
        t.poller.unregister(raw)
        t.sock = ctx.wrap_socket(raw, server_hostname=host, do_handshake_on_connect=False)
    except BaseException:
        raw.close()
        raise
    return t


class Transport:
    """MicroPython stream semantics with deadlines, handed to umqtt as its .sock.

    read(n) returns exactly n bytes or raises OSError (deadline, EOF); in non-blocking mode
    (umqtt's check_msg) read returns None when nothing is waiting. `until` (ticks) caps every
    wait of a whole exchange, e.g. publish + PUBACK. The socket itself never blocks.
    """

    buf: "bytearray | None"  # (a class annotation: no name, no heap on the board)

    def __init__(self, sock, ms, feed):
        self.sock = sock
        self.timeout = ms  # each read or write, in ms
        self.feed = feed
        self.blocking = True
        self.until = None
        self.poller = select.poll()
        # last traffic each way, for keepalive decisions; tx None until the first write: TLS
        # handshake pending, when a write that cannot go on waits for the peer's next flight
        # (polling for writable would return at once on ports that poll the raw fd)
        self.rx = time.ticks_ms()
        self.tx = None
        self.buf = None  # allocated at boot by the owner: long messages are read into it

    def setblocking(self, blocking):
        self.blocking = blocking

    def deadline(self, ms):
        """Cap every wait from now until deadline(None) at ms in total."""
        self.until = None if ms is None else time.ticks_add(time.ticks_ms(), ms)

    def _wait(self, event, start):
        """One fed poll of at most _SLICE_MS; OSError(ETIMEDOUT) past either deadline."""
        now = time.ticks_ms()
        left = self.timeout - time.ticks_diff(now, start)
        if self.until is not None:
            left = min(left, time.ticks_diff(self.until, now))
        if left <= 0:
            raise OSError(errno.ETIMEDOUT)
        self.feed()
        self.poller.register(self.sock, event)
        return self.poller.poll(min(left, _SLICE_MS))

    def read(self, n):
        if n > _MAX_READ:
            raise OSError(errno.ENOBUFS)  # bigger than anything this device accepts
        if n > _SMALL and self.buf is not None and n <= len(self.buf):
            # A view of .buf, valid until the next long read: a session's heap is too
            # fragmented for one contiguous block the size of an OTA push (~700 bytes).
            if self.readinto(self.buf, n) is None:
                return None
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
                raise OSError(errno.ECONNRESET)  # the peer closed
            elif not data and not self.blocking:
                return None
            else:
                self._wait(select.POLLIN, start)
        return data

    def readinto(self, buf, n=None):
        """Exactly n (default: len(buf)) bytes into buf, allocating nothing; None when
        non-blocking and nothing is waiting, as a socket's readinto says."""
        n = n or len(buf)
        mv = memoryview(buf)
        got = 0
        start = time.ticks_ms()
        while got < n:
            # Read before polling: TLS may already hold decrypted bytes the fd poll cannot see.
            k = self.sock.readinto(mv[got:n])
            if k:
                got += k
                self.rx = time.ticks_ms()
            elif k is not None:
                raise OSError(errno.ECONNRESET)  # the peer closed
            elif not got and not self.blocking:
                return None
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
                self._wait(select.POLLIN if self.tx is None else select.POLLOUT, start)
        self.tx = time.ticks_ms()
        return sent

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

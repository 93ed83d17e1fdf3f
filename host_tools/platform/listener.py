# The legacy public endpoint's port 1883: TLS and plain MQTT on one port, told apart by the
# first byte a client sends (0x16 opens a TLS handshake record; MQTT's CONNECT is 0x10).
import asyncio
import errno
import logging
import socket

log = logging.getLogger("zeroburn.platform")

TLS_HANDSHAKE_RECORD = 0x16
_ACCEPT_ERRORS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


class OnePortListener:
    """Accepts on (host, port); peeks (MSG_PEEK: nothing is consumed) at the first byte of each
    connection, then hands the socket to asyncio as TLS or plain, factory(tls) making its
    protocol. A connection that sends nothing within timeout_s is closed, and so is a TLS
    handshake not finished within timeout_s. Quacks like asyncio.Server where the platform
    uses one (sockets, close, wait_closed)."""

    def __init__(self, loop, host, port, factory, ssl_context, timeout_s, backlog=4096):
        self.loop, self.factory, self.ssl, self.timeout = loop, factory, ssl_context, timeout_s
        sock = socket.create_server((host, port), backlog=backlog)
        sock.setblocking(False)
        self.sockets = [sock]
        self._waiting = {}  # accepted socket -> its deadline timer, until its first byte
        self._handshakes = set()
        self._closed = False
        loop.add_reader(sock, self._accept)

    def _accept(self):
        sock = self.sockets[0]
        for _ in range(128):  # then let the loop run other callbacks
            try:
                conn, _addr = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno not in _ACCEPT_ERRORS:
                    raise
                # out of descriptors: stop accepting for a second, as asyncio's own servers do
                log.warning("platform: accept failed (%s); pausing the one-port listener", e)
                self.loop.remove_reader(sock)
                self.loop.call_later(1.0, self._resume)
                return
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._waiting[conn] = self.loop.call_later(self.timeout, self._drop, conn)
            self.loop.add_reader(conn, self._peek, conn)

    def _resume(self):
        if not self._closed:
            self.loop.add_reader(self.sockets[0], self._accept)

    def _drop(self, conn):
        self._waiting.pop(conn, None)
        self.loop.remove_reader(conn)
        conn.close()

    def _peek(self, conn):
        try:
            first = conn.recv(1, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            first = b""
        self._waiting.pop(conn).cancel()
        self.loop.remove_reader(conn)
        if not first:
            conn.close()
            return
        tls = first[0] == TLS_HANDSHAKE_RECORD
        task = self.loop.create_task(self._hand_over(conn, tls))
        self._handshakes.add(task)
        task.add_done_callback(self._handshakes.discard)

    async def _hand_over(self, conn, tls):
        try:
            await self.loop.connect_accepted_socket(
                lambda: self.factory(tls),
                conn,
                ssl=self.ssl if tls else None,
                ssl_handshake_timeout=self.timeout if tls else None,
            )
        except asyncio.CancelledError:
            conn.close()
            raise
        except Exception as e:  # a failed or timed-out handshake ends this connection only
            log.debug("platform: TLS handshake on the one-port listener failed: %s", e)
            conn.close()

    def close(self):
        if self._closed:
            return
        self._closed = True
        sock = self.sockets[0]
        self.loop.remove_reader(sock)
        sock.close()
        for conn, timer in list(self._waiting.items()):
            timer.cancel()
            self._drop(conn)
        for task in list(self._handshakes):
            task.cancel()

    async def wait_closed(self):
        if self._handshakes:
            await asyncio.gather(*self._handshakes, return_exceptions=True)

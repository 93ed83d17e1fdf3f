# A board's network link to loopback servers: every connection a virtual board makes to
# 127.0.0.1 passes through here, so Wi-Fi loss and partitions happen on real TCP streams.
import select
import socket
import struct
import threading


class Link:
    """Per-board TCP relay: one loopback listener per target port, one thread per connection.

    partition on: traffic stops both ways (bytes wait in the kernel, as packets would be
    retransmitted) and new connections hang; off: it flows again. drop(): every connection is
    reset, as when the access point goes away.
    """

    def __init__(self, name="board"):
        self.name = name
        self.partitioned = False
        self._listeners = {}  # target port -> (listening socket, its port)
        self._conns = set()
        self._lock = threading.Lock()
        self._closed = False

    def ensure(self, port):
        """The loopback port that relays to 127.0.0.1:port (created on first use)."""
        with self._lock:
            if port in self._listeners:
                return self._listeners[port][1]
            lsock = socket.socket()
            lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            lsock.bind(("127.0.0.1", 0))
            lsock.listen(64)
            local = lsock.getsockname()[1]
            self._listeners[port] = (lsock, local)
        t = threading.Thread(
            target=self._accept, args=(lsock, port), name=f"{self.name}-link-{port}", daemon=True
        )
        t.start()
        return local

    def _accept(self, lsock, port):
        while not self._closed:
            try:
                client, _ = lsock.accept()
            except OSError:
                return
            threading.Thread(
                target=self._pump, args=(client, port), name=f"{self.name}-pump", daemon=True
            ).start()

    def _pump(self, client, port):
        upstream = None
        with self._lock:
            self._conns.add(client)
        try:
            # a connection opened during a partition never reaches the server (SYN lost)
            while self.partitioned and not self._closed:
                r, _, _ = select.select([client], [], [], 0.05)
                if r and not client.recv(65536, socket.MSG_PEEK):
                    return
            if self._closed:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", port), timeout=5)
            except OSError:
                # nothing listens: reset the board's side, as a refused connection would
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                return
            with self._lock:
                self._conns.add(upstream)
            pair = {client: upstream, upstream: client}
            while not self._closed:
                if self.partitioned:
                    select.select([], [], [], 0.05)
                    continue
                r, _, _ = select.select(list(pair), [], [], 0.1)
                for s in r:
                    data = s.recv(65536)
                    if not data:
                        return
                    pair[s].sendall(data)
        except OSError:
            return
        finally:
            for s in (client, upstream):
                if s is not None:
                    with self._lock:
                        self._conns.discard(s)
                    try:
                        s.close()
                    except OSError:
                        pass

    def drop(self):
        """Reset every open connection (RST, as a vanished network interface leaves them)."""
        with self._lock:
            conns = list(self._conns)
        for s in conns:
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self):
        self._closed = True
        self.drop()
        with self._lock:
            listeners = list(self._listeners.values())
            self._listeners.clear()
        for lsock, _ in listeners:
            try:
                lsock.shutdown(socket.SHUT_RDWR)  # wakes the accept() thread on Linux
            except OSError:
                pass
            try:
                lsock.close()
            except OSError:
                pass

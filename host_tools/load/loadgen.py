# Load generator for the bench and fleet: an asyncio MQTT 3.1.1 client that speaks the bytes
# itself (regnwl registration, connwl login, QoS 1 publish loops, a latency-measuring
# subscriber), a byte-counting loopback relay, and the statistics the measurements need.
import asyncio
import concurrent.futures
import json
import os
import secrets
import socket
import ssl
import struct
import threading
import time
from pathlib import Path
from typing import cast

from host_tools.platform import auth, pki

# MQTT 3.1.1 fixed-header types (first byte, flags included where fixed).
_CONNECT = 0x10
_CONNACK = 0x20
_PUBLISH = 0x30
_PUBACK = 0x40
_SUBSCRIBE = 0x82
_SUBACK = 0x90
_PINGREQ = b"\xc0\x00"
_PINGRESP = 0xD0
DISCONNECT = b"\xe0\x00"


class LoadError(Exception):
    """A connection, refusal or timeout seen by the load client; `cause` names it for tallies."""

    def __init__(self, cause, detail=""):
        super().__init__(f"{cause}: {detail}" if detail else cause)
        self.cause = cause


# ---------------------------------------------------------------- codec (client side)


def _varlen(n):
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _utf8(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("!H", len(b)) + b


def connect_packet(client_id, username=None, password=None, keepalive=60, clean=True):
    flags = (0x02 if clean else 0) | (0x80 if username is not None else 0)
    flags |= 0x40 if password is not None else 0
    body = _utf8("MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive) + _utf8(client_id)
    if username is not None:
        body += _utf8(username)
    if password is not None:
        body += _utf8(password)
    return bytes([_CONNECT]) + _varlen(len(body)) + body


def publish_packet(topic, payload, qos=0, pid=0):
    body = _utf8(topic) + (struct.pack("!H", pid) if qos else b"") + payload
    return bytes([_PUBLISH | (qos << 1)]) + _varlen(len(body)) + body


def subscribe_packet(pid, topics):
    body = struct.pack("!H", pid) + b"".join(_utf8(t) + bytes([q]) for t, q in topics)
    return bytes([_SUBSCRIBE]) + _varlen(len(body)) + body


def sign(product_secret, device_name, product_key, random, signmethod="hmacsha256"):
    """regnwl password (PROTOCOL.md section 2), computed by the platform's own signer."""
    if signmethod not in auth.SIGN_METHODS:
        raise ValueError(
            f"signmethod must be one of {', '.join(auth.SIGN_METHODS)}, not {signmethod!r}"
        )
    return auth.registration_password(signmethod, product_secret, device_name, product_key, random)


def regnwl_connect(product_key, product_secret, device_name, signmethod="hmacsha256", random=None):
    """(clientId, username, password) of a regnwl CONNECT, LuatOS style (securemode=-2)."""
    random = random or secrets.token_hex(8)
    cid = f"{device_name}|securemode=-2,authType=regnwl,random={random},signmethod={signmethod}|"
    pw = sign(product_secret, device_name, product_key, random, signmethod)
    return cid, f"{device_name}&{product_key}", pw


def connwl_connect(product_key, device_name, client_id, token):
    return f"{client_id}|securemode=-2,authType=connwl|", f"{device_name}&{product_key}", token


# ---------------------------------------------------------------- the client


class MqttClient(asyncio.Protocol):
    """One MQTT connection; callbacks fed from data_received, no task per connection."""

    def __init__(self, on_message=None):
        self.on_message = on_message  # fn(topic: str, payload: bytes, received_at: float)
        self.transport: asyncio.WriteTransport | None = None
        self.bytes_in = 0
        self.bytes_out = 0
        self.acked = 0  # PUBACKs received
        self._buf = b""
        self._pid = 0
        # CONNACK and SUBACK slots: asyncio futures, or concurrent ones in the blocking observer
        self._connack: asyncio.Future | concurrent.futures.Future | None = None
        self._suback: asyncio.Future | concurrent.futures.Future | None = None
        self._ack_waiter: asyncio.Future | None = None
        self._msg_waiter: asyncio.Future | None = None
        self.inbox = []  # (topic, payload) when no on_message callback is set
        self.closed = None
        self._sub_sent = False

    # asyncio.Protocol
    def connection_made(self, transport):
        # create_connection (TCP, with or without ssl=) hands a stream transport
        self.transport = cast(asyncio.Transport, transport)
        self.closed = asyncio.get_running_loop().create_future()

    def data_received(self, data):
        self.bytes_in += len(data)
        buf = self._buf + data if self._buf else data
        pos, end = 0, len(buf)
        while end - pos >= 2:
            first = buf[pos]
            length, mult, i = 0, 1, pos + 1
            while True:
                if i >= end:
                    self._buf = buf[pos:]
                    return
                b = buf[i]
                length += (b & 0x7F) * mult
                mult <<= 7
                i += 1
                if not b & 0x80:
                    break
            if i + length > end:
                break
            self._dispatch(first, buf[i : i + length])
            pos = i + length
        self._buf = buf[pos:]

    def connection_lost(self, exc):
        err = LoadError("closed", str(exc) if exc else "by peer")
        for fut in (self._connack, self._suback, self._ack_waiter, self._msg_waiter):
            if fut is not None and not fut.done():
                fut.set_exception(err)
        if self.closed and not self.closed.done():
            self.closed.set_result(None)

    def _dispatch(self, first, body):
        kind = first & 0xF0
        if kind == _PUBACK:
            self.acked += 1
            w = self._ack_waiter
            if w is not None and not w.done():
                w.set_result(None)
        elif kind == _PUBLISH:
            now = time.perf_counter()
            (tlen,) = struct.unpack_from("!H", body)
            topic = body[2 : 2 + tlen].decode()
            qos = (first >> 1) & 3
            off = 2 + tlen
            if qos:
                self.write(b"\x40\x02" + body[off : off + 2])
                off += 2
            payload = body[off:]
            if self.on_message is not None:
                self.on_message(topic, payload, now)
            else:
                self.inbox.append((topic, payload))
                w = self._msg_waiter
                if w is not None and not w.done():
                    w.set_result(None)
        elif kind == _CONNACK:
            if self._connack is not None and not self._connack.done():
                self._connack.set_result(body[1])
        elif kind == _SUBACK:
            if self._suback is not None and not self._suback.done():
                self._suback.set_result(list(body[2:]))

    def write(self, data):
        self.bytes_out += len(data)
        assert self.transport is not None  # written to only once connected
        self.transport.write(data)

    def next_pid(self):
        self._pid = self._pid % 65535 + 1
        return self._pid

    async def mqtt_connect(self, client_id, username, password, keepalive=60, timeout=10):
        self._connack = fut = asyncio.get_running_loop().create_future()
        self.write(connect_packet(client_id, username, password, keepalive))
        return await asyncio.wait_for(fut, timeout)

    async def subscribe(self, topic, qos=1, timeout=10):
        self._suback = fut = asyncio.get_running_loop().create_future()
        self.write(subscribe_packet(self.next_pid(), [(topic, qos)]))
        return await asyncio.wait_for(fut, timeout)

    async def wait_message(self, timeout):
        if not self.inbox:
            self._msg_waiter = asyncio.get_running_loop().create_future()
            await asyncio.wait_for(self._msg_waiter, timeout)
        return self.inbox.pop(0)

    async def publish_qos1(self, topic, count, window=10, payload=None, deadline=None):
        """Publish `count` QoS 1 messages with at most `window` unacknowledged; return acked.

        payload: bytes, or fn(i) -> bytes (called at send time, so timestamps are fresh).
        Stops at `deadline` (perf_counter) with what was acknowledged by then.
        """
        loop = asyncio.get_running_loop()
        start_acked, sent = self.acked, 0
        while self.acked - start_acked < count:
            batch = []
            while sent < count and sent - (self.acked - start_acked) < window:
                body = payload(sent) if callable(payload) else (payload or b"{}")
                batch.append(publish_packet(topic, body, 1, self.next_pid()))
                sent += 1
            if batch:
                self.write(b"".join(batch))
            self._ack_waiter = loop.create_future()
            remaining = None if deadline is None else deadline - time.perf_counter()
            if remaining is not None and remaining <= 0:
                break
            try:
                await asyncio.wait_for(self._ack_waiter, remaining)
            except TimeoutError:
                break
        return self.acked - start_acked

    def close(self, disconnect=True):
        if self.transport is not None and not self.transport.is_closing():
            if disconnect:
                try:
                    self.write(DISCONNECT)
                except Exception:
                    pass
            self.transport.close()


def client_ssl_context(ca_path):
    """Verifying TLS context (certificate and host name) trusting only the given CA."""
    ctx = ssl.create_default_context(cafile=str(ca_path))
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


async def open_client(host, port, ssl_ctx=None, server_hostname=None, on_message=None, timeout=10):
    loop = asyncio.get_running_loop()
    try:
        _, proto = await asyncio.wait_for(
            loop.create_connection(
                lambda: MqttClient(on_message),
                host,
                port,
                ssl=ssl_ctx,
                server_hostname=(server_hostname or "localhost") if ssl_ctx else None,
            ),
            timeout,
        )
    except TimeoutError:
        raise LoadError("connect-timeout")
    except ssl.SSLError as e:
        raise LoadError("tls", str(e))
    except OSError as e:
        raise LoadError("connect", e.strerror or str(e))
    return proto


async def register(
    host,
    port,
    ssl_ctx,
    product_key,
    product_secret,
    device_name,
    signmethod="hmacsha256",
    timeout=15,
):
    """One regnwl registration; returns the platform's reply dict (clientId, deviceToken...)."""
    c = await open_client(host, port, ssl_ctx, timeout=timeout)
    try:
        cid, user, pw = regnwl_connect(product_key, product_secret, device_name, signmethod)
        try:
            rc = await c.mqtt_connect(cid, user, pw, timeout=timeout)
            if rc != 0:
                raise LoadError(f"connack-{rc}")
            topic, payload = await c.wait_message(timeout)
        except TimeoutError:
            raise LoadError("reply-timeout")
        if topic != "/ext/regnwl":
            raise LoadError("bad-reply", f"topic {topic}")
        reply = json.loads(payload)
        c.write(DISCONNECT)
        return reply
    finally:
        c.close(disconnect=False)


async def login(
    host, port, ssl_ctx, product_key, creds, keepalive=300, on_message=None, timeout=15
):
    """connwl login with a registration reply; returns the open MqttClient."""
    c = await open_client(host, port, ssl_ctx, on_message=on_message, timeout=timeout)
    cid, user, pw = connwl_connect(
        product_key, creds["deviceName"], creds["clientId"], creds["deviceToken"]
    )
    try:
        rc = await c.mqtt_connect(cid, user, pw, keepalive, timeout=timeout)
    except TimeoutError:
        c.close(False)
        raise LoadError("connack-timeout")
    if rc != 0:
        c.close(False)
        raise LoadError(f"connack-{rc}")
    return c


async def plain_connect(host, port, client_id, keepalive=300, on_message=None, timeout=15):
    """Anonymous MQTT login (the mosquitto reference)."""
    c = await open_client(host, port, None, on_message=on_message, timeout=timeout)
    rc = await c.mqtt_connect(client_id, None, None, keepalive, timeout=timeout)
    if rc != 0:
        c.close(False)
        raise LoadError(f"connack-{rc}")
    return c


async def bounded_gather(factories, concurrency, deadline):
    """Run coroutine factories with at most `concurrency` at once, none started after deadline.

    Returns (results, errors by cause). Results keep the factories' order (None where failed).
    """
    results = [None] * len(factories)
    errors = {}
    it = iter(enumerate(factories))

    async def worker():
        for i, make in it:
            if time.perf_counter() > deadline:
                errors["deadline"] = errors.get("deadline", 0) + 1
                continue
            try:
                results[i] = await make()
            except LoadError as e:
                errors[e.cause] = errors.get(e.cause, 0) + 1
            except (TimeoutError, OSError, ValueError) as e:
                cause = type(e).__name__
                errors[cause] = errors.get(cause, 0) + 1

    await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, len(factories))))))
    return results, errors


def raise_nofile(wanted):
    """Raise RLIMIT_NOFILE towards `wanted` within the hard limit; return the soft limit now."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


# ---------------------------------------------------------------- scenarios


async def registrations(
    host, port, ssl_ctx, product_key, product_secret, n, prefix, concurrency=32, time_limit=60
):
    """n regnwl registrations over TLS; {'creds': [...], 'ok', 'errors', 'seconds', 'per_s'}."""
    t0 = time.perf_counter()
    names = [f"{prefix}{i:06d}" for i in range(n)]
    factories = [
        (lambda dn=dn: register(host, port, ssl_ctx, product_key, product_secret, dn))
        for dn in names
    ]
    creds, errors = await bounded_gather(factories, concurrency, t0 + time_limit)
    dt = time.perf_counter() - t0
    ok = [c for c in creds if c]
    return {"creds": ok, "ok": len(ok), "errors": errors, "seconds": dt, "per_s": len(ok) / dt}


async def connect_many(make_one, n, concurrency=64, time_limit=60):
    """Open n connections with make_one(i) -> client; returns (clients, errors, seconds)."""
    t0 = time.perf_counter()
    clients, errors = await bounded_gather(
        [(lambda i=i: make_one(i)) for i in range(n)], concurrency, t0 + time_limit
    )
    return [c for c in clients if c], errors, time.perf_counter() - t0


async def publish_throughput(clients_topics, per_client, window=16, time_limit=20):
    """Every (client, topic) publishes per_client QoS 1 messages as fast as acks allow.

    Returns {'acked', 'seconds', 'per_s'}. Bounded by count and by time_limit.
    """
    payload = b'{"id":1,"params":{"temp":21.5,"hum":40}}'
    t0 = time.perf_counter()
    deadline = t0 + time_limit
    done = await asyncio.gather(
        *(c.publish_qos1(t, per_client, window, payload, deadline) for c, t in clients_topics),
        return_exceptions=True,
    )
    dt = time.perf_counter() - t0
    acked = sum(d for d in done if isinstance(d, int))
    errors = sum(1 for d in done if not isinstance(d, int))
    return {"acked": acked, "seconds": dt, "per_s": acked / dt, "failed_clients": errors}


class LatencyProbe:
    """Collects routing latencies from payloads that start with a send timestamp.

    Payload: b'{"t":<perf_counter seconds>,...}'. On Linux perf_counter is CLOCK_MONOTONIC,
    the same clock in every process of the machine, so the subscriber may run elsewhere.
    """

    def __init__(self):
        self.latencies = []
        self.sent_at = []  # perf_counter send time of each latency, for a time series

    @staticmethod
    def payload(i):
        return b'{"t":%.6f,"i":%d}' % (time.perf_counter(), i)

    def on_message(self, topic, payload, received_at):
        try:
            sent = float(payload[5 : payload.index(b",")])
        except ValueError:
            return
        self.latencies.append((received_at - sent) * 1000.0)
        self.sent_at.append(sent)

    def by_second(self, p=99):
        """[(second from the first send, n, p-th percentile ms)]: does latency settle?"""
        if not self.sent_at:
            return []
        t0 = min(self.sent_at)
        buckets = {}
        for t, lat in zip(self.sent_at, self.latencies, strict=True):
            buckets.setdefault(int(t - t0), []).append(lat)
        out = []
        for k, v in sorted(buckets.items()):
            q = percentile(v, p)
            assert q is not None  # a bucket holds at least one latency
            out.append((k, len(v), round(q, 2)))
        return out


async def paced_publishing(clients_topics, rate_per_client, seconds, payload_fn):
    """Each client publishes QoS 1 at rate_per_client msg/s for `seconds`, phases spread out.

    Returns messages acknowledged. Not waiting for each ack keeps the pace honest; acks are
    counted from the clients' counters.
    """
    interval = 1.0 / rate_per_client
    n = len(clients_topics)
    start_acked = sum(c.acked for c, _ in clients_topics)
    t0 = time.perf_counter()
    end = t0 + seconds
    # Each client gets a time slot inside the interval so the load is smooth, not bursty.
    tick = interval / max(1, n)
    sent = 0
    k = 0
    while True:
        now = time.perf_counter()
        if now >= end:
            break
        due = int((now - t0) / tick)  # publishes that should have happened by now
        while k < due and time.perf_counter() < end:
            c, topic = clients_topics[k % n]
            if not c.transport.is_closing():
                c.write(publish_packet(topic, payload_fn(k), 1, c.next_pid()))
                sent += 1
            k += 1
        await asyncio.sleep(min(0.002, max(0.0, end - time.perf_counter())))
    # Bounded wait for the last acks.
    wait_end = time.perf_counter() + 5
    while time.perf_counter() < wait_end:
        acked = sum(c.acked for c, _ in clients_topics) - start_acked
        if acked >= sent:
            break
        await asyncio.sleep(0.02)
    acked = sum(c.acked for c, _ in clients_topics) - start_acked
    return {"sent": sent, "acked": acked, "seconds": seconds}


# ---------------------------------------------------------------- byte-counting relay


class ByteRelay:
    """A loopback TCP relay between clients and a server that counts bytes each way.

    Runs its own event loop in a thread, so blocking clients (the Aliyun SDK, a virtual board)
    can go through it. Every byte is counted the same way for every client, TLS included.
    """

    def __init__(self, target_host, target_port):
        self.target = (target_host, target_port)
        self.up = 0  # client -> server
        self.down = 0  # server -> client
        self.connections = 0
        self.sessions = []  # one {"up", "down"} per accepted connection, in order, kept live
        self.port = None
        self._loop = None
        self._server = None
        self._thread = None
        self._ready = threading.Event()
        self._lock = threading.Lock()
        self._writers = set()  # open stream writers, both sides (closed at stop)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def start(self):
        self._thread = threading.Thread(target=self._run, name="byte-relay", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("byte relay did not start")
        return self

    def reset(self):
        with self._lock:
            self.up = self.down = self.connections = 0
            self.sessions = []

    def session_counts(self):
        with self._lock:
            return [dict(s) for s in self.sessions]

    def counts(self):
        with self._lock:
            return {"up": self.up, "down": self.down, "connections": self.connections}

    def _run(self):
        self._loop = asyncio.new_event_loop()
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self._server_ssl())
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        self._server.close()
        # connections still being relayed end here, rather than as tasks destroyed pending
        # connections still being relayed end here (their sockets closed, so their pipes see
        # the end), rather than as tasks destroyed while pending
        for w in list(self._writers):
            w.close()
        pending = asyncio.all_tasks(self._loop)
        if pending:
            self._loop.run_until_complete(asyncio.wait(pending, timeout=5))
        self._loop.run_until_complete(self._server.wait_closed())
        self._loop.close()

    async def _pipe(self, reader, writer, attr, session):
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                with self._lock:
                    setattr(self, attr, getattr(self, attr) + len(data))
                    session[attr] += len(data)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            try:
                writer.close()
            except Exception:
                pass

    async def _open_upstream(self):
        return await asyncio.open_connection(*self.target)

    async def _handle(self, reader, writer):
        session = {"up": 0, "down": 0}
        with self._lock:
            self.connections += 1
            self.sessions.append(session)
        self._writers.add(writer)
        try:
            ur, uw = await asyncio.wait_for(self._open_upstream(), 10)
        except (TimeoutError, OSError):
            writer.close()
            self._writers.discard(writer)
            return
        self._writers.add(uw)
        try:
            await asyncio.gather(
                self._pipe(reader, uw, "up", session), self._pipe(ur, writer, "down", session)
            )
        finally:
            self._writers.discard(writer)
            self._writers.discard(uw)

    def _server_ssl(self):
        return None

    def stop(self):
        if self._loop is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
            assert self._thread is not None  # the loop runs in it (start() made it)
            self._thread.join(10)


class TlsTerminatingRelay(ByteRelay):
    """Like ByteRelay, but it ends the client's TLS and opens its own to the server.

    What it counts is then the MQTT bytes alone (TLS excluded), measured, not computed, and the
    same way for every client. Clients must trust `ca_pem` (make_relay_ca); the relay verifies
    the server against `upstream_ca` and `upstream_hostname` as a device would.
    """

    def __init__(self, target_host, target_port, upstream_ca, upstream_hostname, work_dir):
        super().__init__(target_host, target_port)
        self.upstream_ca = upstream_ca
        self.upstream_hostname = upstream_hostname
        self.ca_pem, cert, key = make_relay_ca(work_dir)
        self._ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._ctx.load_cert_chain(cert, key)

    def _server_ssl(self):
        return self._ctx

    async def _open_upstream(self):
        ctx = client_ssl_context(self.upstream_ca)
        return await asyncio.open_connection(
            *self.target, ssl=ctx, server_hostname=self.upstream_hostname
        )


# Host names a relay certificate covers: loopback and the Aliyun patterns configs name.
def make_relay_ca(work_dir):
    """A throwaway root and a server certificate (localhost, 127.0.0.1, Aliyun's host names)
    for the relay, issued by the platform's own PKI in work_dir; returns (ca_pem, cert, key)."""
    ca, cert, key = pki.ensure(work_dir)
    return Path(ca).read_text(), str(cert), str(key)


# ---------------------------------------------------------------- statistics


def percentile(values, p):
    """p-th percentile (0..100) with linear interpolation between closest ranks (numpy's)."""
    if not values:
        return None
    s = sorted(values)
    if len(s) == 1:
        return float(s[0])
    k = (len(s) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return float(s[lo] + (s[hi] - s[lo]) * (k - lo))


def summarize(values, ps=(50, 95, 99)):
    """{'n', 'p50', 'p95', 'p99', 'max'} (None where empty), values rounded to 3 decimals."""
    out: dict[str, float | None] = {"n": len(values)}
    for p in ps:
        v = percentile(values, p)
        out[f"p{p}"] = None if v is None else round(v, 3)
    out["max"] = round(float(max(values)), 3) if values else None
    return out


def message_loss(sent, stored):
    """Compare what boards saw acknowledged with what the platform stored.

    sent, stored: iterables of hashable message keys (e.g. (deviceName, message id)). Keys
    count with multiplicity: a key sent twice (a board whose counter restarted after a power
    cut) must be stored at least twice. QoS 1 allows extra stored copies: those are counted as
    duplicates, not as loss. Returns {'sent', 'stored', 'lost', 'duplicates', 'lost_keys'
    (up to 20, sorted)}.
    """
    sent_n, stored_n = _count(sent), _count(stored)
    lost, dup, lost_keys = 0, 0, []
    for key, n in sent_n.items():
        missing = n - stored_n.get(key, 0)
        if missing > 0:
            lost += missing
            lost_keys.append(key)
    for key, n in stored_n.items():
        dup += max(0, n - sent_n.get(key, 0)) if key in sent_n else 0
    return {
        "sent": sum(sent_n.values()),
        "stored": sum(stored_n.values()),
        "lost": lost,
        "duplicates": dup,
        "lost_keys": sorted(lost_keys, key=repr)[:20],
    }


def _count(keys):
    counts = {}
    for key in keys:
        counts[key] = counts.get(key, 0) + 1
    return counts


# ---------------------------------------------------------------- process helpers


def rss_kib(pid):
    """Resident set size of a process in KiB (Linux /proc)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise LoadError("rss", f"no VmRSS for pid {pid}")


def cpu_seconds(pid):
    """User + system CPU seconds a process has used (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- observer process


def _feed(client, s):
    """One blocking read (socket timeout) handed to the client; False once the peer closed."""
    try:
        data = s.recv(65536)
    except TimeoutError:
        return True
    if data:
        client.data_received(data)
    return bool(data)


def observe(port, ca_path, username, password, topic, seconds, out=None):
    """Subscribe (blocking TLS socket, in its own process) and collect routing latencies.

    The publishers stamp perf_counter() into each payload; on Linux perf_counter is
    CLOCK_MONOTONIC, one clock for every process on the machine, so a separate process can
    subtract. Separate, so that the subscriber's reading is not slowed by the publishers'
    event loop. It subscribes at QoS 0: routing latency without the subscriber's own
    acknowledgements in the path (the publishers publish at QoS 1). Prints "ready" once
    subscribed, then one JSON line with the summary.
    """
    import sys

    out = out or sys.stdout
    ctx = client_ssl_context(ca_path)
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    s = ctx.wrap_socket(raw, server_hostname="localhost")
    probe = LatencyProbe()
    client = MqttClient(on_message=probe.on_message)

    class _Sock(asyncio.WriteTransport):
        """The blocking TLS socket, as the transport MqttClient writes through."""

        def write(self, data):
            s.sendall(data)

        def is_closing(self):
            return False

    client.transport = _Sock()
    client._connack = concurrent.futures.Future()  # no event loop here
    client._suback = concurrent.futures.Future()
    client.write(connect_packet("bench-observer", username, password, 300))
    s.settimeout(1.0)
    end = time.perf_counter() + 10
    while not (client._connack.done() and client._suback.done()) and time.perf_counter() < end:
        if client._connack.done() and not client._sub_sent:
            if client._connack.result() != 0:
                break
            client.write(subscribe_packet(1, [(topic, 0)]))
            client._sub_sent = True
        if not _feed(client, s):
            break
    if not client._suback.done() or client._suback.result() != [0]:
        print(json.dumps({"error": "observer could not subscribe"}), file=out, flush=True)
        return 1
    print("ready", file=out, flush=True)
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        if not _feed(client, s):
            break
    s.close()
    result: dict[str, object] = {"latency_ms": summarize(probe.latencies)}
    result["p99_by_second"] = [x[2] for x in probe.by_second(99)]
    print(json.dumps(result), file=out, flush=True)
    return 0


if __name__ == "__main__":
    import sys

    if len(sys.argv) == 7 and sys.argv[1] == "observe":
        port, ca, user, topic, secs = sys.argv[2:]
        pw = os.environ.get("ZB_OBSERVER_PASSWORD", "")  # not on the command line
        sys.exit(observe(int(port), ca, user, pw, topic, float(secs)))
    print(
        "usage: ZB_OBSERVER_PASSWORD=... python -m host_tools.load.loadgen"
        " observe PORT CA USER TOPIC S"
    )
    sys.exit(2)

# Helpers for tests in any project: a running platform and a small blocking MQTT client.
import contextlib
import json
import secrets
import socket
import ssl
import time

from host_tools.platform import auth, codec


@contextlib.contextmanager
def running_platform(state_dir, **settings):
    """A Platform on free loopback ports in this process; stopped on exit.

    Usage: `with running_platform(tmp_path / "platform", linger_s=1) as plat: ...`
    """
    from host_tools.platform.server import Platform

    plat = Platform(state_dir, **settings)
    plat.start()
    try:
        yield plat
    finally:
        plat.close()


def client_context(ca_path):
    """A CPython client SSLContext trusting the platform's test CA, verifying host names."""
    ctx = ssl.create_default_context(cafile=str(ca_path))
    return ctx


def regnwl_client_id(dn, pk, random=None, signmethod="hmacsha256", securemode="2", style="c"):
    """The C SDK style `dn.pk|random=..,authType=regnwl,...|` or LuatOS style `dn|...|`."""
    random = random or str(secrets.randbelow(2**32))
    if style == "luatos":
        ext = f"securemode={securemode},authType=regnwl,random={random},signmethod={signmethod}"
        cid = f"{dn}|{ext}|"
    else:
        ext = f"random={random},authType=regnwl,securemode={securemode},signmethod={signmethod}"
        cid = f"{dn}.{pk}|{ext}|"
    return cid, random


def regnwl_login(dn, pk, product_secret, signmethod="hmacsha256", style="c", upper=None):
    """(client_id, username, password) for a regnwl CONNECT."""
    cid, random = regnwl_client_id(dn, pk, signmethod=signmethod, style=style)
    pw = auth.registration_password(signmethod, product_secret, dn, pk, random)
    if upper if upper is not None else style == "c":
        pw = pw.upper()
    return cid, f"{dn}&{pk}", pw


def connwl_login(client_id, device_name, product_key, token):
    return f"{client_id}|securemode=-2,authType=connwl|", f"{device_name}&{product_key}", token


class Client:
    """Blocking MQTT 3.1.1 client over a real socket (TLS when ctx is given). Every wait has a
    deadline."""

    def __init__(self, port, ctx=None, host="127.0.0.1", server_hostname="localhost", timeout=5):
        raw = socket.create_connection((host, port), timeout=timeout)
        self.sock = ctx.wrap_socket(raw, server_hostname=server_hostname) if ctx else raw
        self.sock.settimeout(timeout)
        self.timeout = timeout
        self.decoder = codec.Decoder(max_packet=1 << 28)
        self.inbox = []
        self.pid = 0

    def send(self, data):
        self.sock.sendall(data)

    def close(self):
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _read_packets(self, deadline):
        self.sock.settimeout(max(0.01, deadline - time.monotonic()))
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("closed by the platform")
        self.inbox.extend(self.decoder.feed(data))

    def recv(self, timeout=None, want=None):
        """Next packet (optionally the first satisfying want(p)); TimeoutError at the deadline."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            for i, p in enumerate(self.inbox):
                if want is None or want(p):
                    return self.inbox.pop(i)
            if time.monotonic() > deadline:
                raise TimeoutError("no packet in time")
            try:
                self._read_packets(deadline)
            except TimeoutError:
                raise TimeoutError("no packet in time")

    def closed_by_server(self, timeout=None):
        """True once the server closed the connection (within timeout)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while time.monotonic() < deadline:
            try:
                self._read_packets(deadline)
            except ConnectionError:
                return True
            except TimeoutError:
                return False
            except (OSError, ssl.SSLError):
                return True
        return False

    def connect(self, client_id, username=None, password=None, keepalive=60, will=None):
        """Send CONNECT; return the CONNACK return code."""
        if isinstance(password, str):
            password = password.encode()
        self.send(codec.encode_connect(client_id, username, password, keepalive, will=will))
        p = self.recv()
        assert p.type == codec.CONNACK, p
        return p.rc

    def next_pid(self):
        self.pid = self.pid % 65535 + 1
        return self.pid

    def publish(self, topic, payload, qos=0, wait=True):
        if isinstance(payload, str):
            payload = payload.encode()
        if isinstance(payload, dict):
            payload = json.dumps(payload).encode()
        pid = self.next_pid() if qos else None
        self.send(codec.encode_publish(topic, payload, qos, pid))
        if qos and wait:
            self.recv(
                want=lambda p: (
                    isinstance(p, codec.Packet) and p.type == codec.PUBACK and p.packet_id == pid
                )
            )
        return pid

    def subscribe(self, *filters, qos=1):
        pid = self.next_pid()
        self.send(codec.encode_subscribe(pid, [(f, qos) for f in filters]))
        p = self.recv(
            want=lambda p: (
                isinstance(p, codec.Packet) and p.type == codec.SUBACK and p.packet_id == pid
            )
        )
        return p.items

    def message(self, topic=None, timeout=None):
        """Next PUBLISH (on topic, if given)."""
        return self.recv(
            timeout,
            want=lambda p: isinstance(p, codec.Publish) and (topic is None or p.topic == topic),
        )

    def ping(self):
        self.send(codec.PINGREQ_BYTES)
        self.recv(want=lambda p: isinstance(p, codec.Packet) and p.type == codec.PINGRESP)

    def disconnect(self):
        with contextlib.suppress(OSError):
            self.send(codec.DISCONNECT_BYTES)
        self.close()


def register(plat, pk, ps, dn, signmethod="hmacsha256", style="c"):
    """Do a regnwl over TLS; return the parsed result (clientId, deviceToken, ...)."""
    cid, user, pw = regnwl_login(dn, pk, ps, signmethod=signmethod, style=style)
    with Client(plat.mqtts_port, client_context(plat.ca_path)) as c:
        rc = c.connect(cid, user, pw)
        if rc != 0:
            raise ConnectionRefusedError(rc)
        msg = c.message("/ext/regnwl")
        c.disconnect()
    return json.loads(msg.payload)


def login(plat, reg, tls=True, keepalive=60):
    """connwl with a registration result; returns the connected Client (rc checked)."""
    cid, user, pw = connwl_login(
        reg["clientId"], reg["deviceName"], reg["productKey"], reg["deviceToken"]
    )
    ctx = client_context(plat.ca_path) if tls else None
    c = Client(plat.mqtts_port if tls else plat.mqtt_port, ctx)
    rc = c.connect(cid, user, pw, keepalive=keepalive)
    if rc != 0:
        c.close()
        raise ConnectionRefusedError(rc)
    return c


def wait_for(cond, timeout=5.0, step=0.02):
    """Poll cond() until truthy; return its value or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(step)


def events(plat, **filters):
    """The platform's events after everything queued so far is committed."""
    plat.flush()
    return plat.registry.events(**filters)

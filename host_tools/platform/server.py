# The Aliyun IoT platform emulator: asyncio MQTT 3.1.1 listeners (TLS-only, and TLS + plain TCP on
# one port) and the HTTPS registration service, on loopback.
import asyncio
import gc
import hmac
import json
import logging
import os
import resource
import socket
import ssl
import struct
import threading
import time
from asyncio import sslproto
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, cast

from host_tools.platform import auth, codec, downlink, https, ota, registry, tls
from host_tools.platform.auth import AuthError
from host_tools.platform.listener import OnePortListener
from host_tools.platform.statelock import StateLock
from host_tools.platform.writer import Writer

if TYPE_CHECKING:
    # asyncio's private selector socket transport (what _make_ssl_transport wraps, as asyncio's
    # own does): CPython has it, typeshed does not declare it.
    _SelectorSocketTransport: Callable[..., asyncio.Transport]
else:
    from asyncio.selector_events import _SelectorSocketTransport

log = logging.getLogger("zeroburn.platform")

# CONNACK code for each refusal cause. Aliyun documents 2 (bad parameters, plain TCP) and 4
# (authentication failed); the rest are [UNK] in PROTOCOL.md and default to 4.
DEFAULT_CODES = {
    "bad_params": 2,
    "bad_client_id": 2,
    "bad_username": 2,
    "bad_device_name": 2,
    "bad_product_key": 2,
    "bad_signmethod": 2,
    "plain_tcp": 2,
    "keepalive_too_short": 2,
    "keepalive_too_long": 2,
    "unsupported_protocol": 1,
    "bad_signature": 4,
    "unknown_product": 4,
    "dynamic_registration_off": 4,
    "activation_limit": 4,
    "device_disabled": 4,
    "unknown_device": 4,
    "unknown_client_id": 4,
    "revoked_client_id": 4,
    "bad_token": 4,
    "bad_password": 4,
    "not_authorized": 5,
    "injected": 3,
    "server_error": 3,
}

DEFAULT_SETTINGS = {
    "refuse_codes": {},  # cause -> CONNACK code, merged over DEFAULT_CODES
    "keepalive_min": 30,
    "keepalive_max": 1200,
    "keepalive_above_max": "clamp",  # or "refuse"
    "connect_timeout_s": 10.0,  # a connection must finish TLS, then send CONNECT, within this
    "tls_chain": "rsa",  # or "ecdsa" (the one-level P-256 chain of older versions; not Aliyun's)
    "tls_max_version": "1.2",  # or "1.3": whether Aliyun offers TLS 1.3 is [UNK]
    "https_codes": {},  # cause -> [code, message] of HTTPS registration, over DEFAULT_HTTPS_CODES
    "activation_limit": registry.ACTIVATION_LIMIT,
    "registration_reply_qos": 0,
    "observer_password": None,  # username "observer" with this password sees every topic
    "custom_topics": {},  # e.g. {"user/cmd": "sub", "user/data": "all"} on top of the defaults
    "reply_to_requester": True,  # NTP and property-post replies reach the asker unsubscribed
    "batch_window_s": 0.002,
    "synchronous": "NORMAL",  # SQLite: NORMAL survives process crashes; FULL also power loss
    "max_packet": codec.MAX_PACKET,
    "ssl_read_buffer": 16 * 1024,  # per TLS connection (asyncio's default: 256 KiB)
    "slow_consumer_bytes": 8 * 1024 * 1024,
    "gc_freeze_connections": 1000,  # see Platform._gc_policy; 0 = leave the collector alone
    # Per-device upstream limits as Aliyun applies them (docs/platform-abuse.md): a PUBLISH past
    # either is dropped (not stored, routed or acknowledged) and a `throttle` event recorded.
    "uplink_qps": 30,  # messages a device may publish per second; 0 = no limit
    "uplink_bytes_per_s": 1024 * 1024,  # topic + payload bytes per second [UNK]; 0 = no limit
    # Backpressure: reading pauses while the bytes accepted but not yet committed are above a
    # bound (of that connection, or of the whole server) and resumes below half of it.
    "connection_backlog_bytes": 1024 * 1024,
    "backlog_bytes": 32 * 1024 * 1024,
    "raise_open_files": True,  # raise the soft open-file limit to the hard one at start
    "ota": {},  # OTA service settings over ota.SETTINGS (URL lifetime, retries, stall bound)
    "rrpc_timeout_s": 8.0,  # RRPC and synchronous service calls (the console's 8 s, [UNK] exact)
    "reply_timeout_s": 8.0,  # how long a property set / async service call waits for its _reply
}

DEFAULT_CUSTOM = {"user/update": "pub", "user/update/error": "pub", "user/get": "sub"}


class _Loop(asyncio.SelectorEventLoop):
    """asyncio keeps a 256 KiB read buffer per TLS connection; thousands of devices need less.

    A TLS record carries at most 16 KiB, so a 16 KiB buffer costs only extra read() calls.
    """

    def __init__(self, read_buffer):
        super().__init__()
        self.ssl_protocol = type(
            "SmallSSLProtocol", (sslproto.SSLProtocol,), {"max_size": int(read_buffer)}
        )

    def _make_ssl_transport(
        self,
        rawsock,
        protocol,
        sslcontext,
        waiter=None,
        *,
        server_side=False,
        server_hostname=None,
        extra=None,
        server=None,
        ssl_handshake_timeout=None,
        ssl_shutdown_timeout=None,
    ):
        from asyncio import constants

        assert waiter is not None  # asyncio's callers (accept, create_connection) always pass one
        ssl_protocol = self.ssl_protocol(
            self,
            protocol,
            sslcontext,
            waiter,
            server_side,
            server_hostname,
            # seconds, a float as asyncio documents it (typeshed's SSLProtocol says int)
            ssl_handshake_timeout=ssl_handshake_timeout or constants.SSL_HANDSHAKE_TIMEOUT,  # pyright: ignore[reportArgumentType]
            ssl_shutdown_timeout=ssl_shutdown_timeout or constants.SSL_SHUTDOWN_TIMEOUT,
        )
        _SelectorSocketTransport(self, rawsock, ssl_protocol, extra=extra, server=server)
        return ssl_protocol._app_transport


def can_publish(pk, dn, topic, custom):
    """Aliyun's default topic classes of a device (PROTOCOL.md section 4)."""
    if topic.startswith("/ext/rrpc/"):  # an RRPC answer on /ext/rrpc/<id>/<a topic of its own>
        inner = "/" + topic.split("/", 4)[-1]
        return inner.count("/") > 1 and (
            can_publish(pk, dn, inner, custom) or can_subscribe(pk, dn, inner, custom)
        )
    if topic.startswith(f"/sys/{pk}/{dn}/"):
        return True
    if topic == f"/ext/ntp/{pk}/{dn}/request":
        return True
    if topic in (
        f"/ota/device/inform/{pk}/{dn}",
        f"/ota/device/progress/{pk}/{dn}",
        f"/ota/device/request/{pk}/{dn}",
    ):
        return True
    own = f"/{pk}/{dn}/"
    if topic.startswith(own):
        return custom.get(topic[len(own) :]) in ("pub", "all")
    return False


def can_subscribe(pk, dn, filt, custom):
    if filt.startswith("/ext/rrpc/+/"):  # custom-topic RRPC: /ext/rrpc/+/<a topic of its own>
        inner = filt[len("/ext/rrpc/+") :]
        return can_subscribe(pk, dn, inner, custom) or can_publish(pk, dn, inner, custom)
    if filt.startswith(f"/sys/{pk}/{dn}/") or filt.startswith(f"/broadcast/{pk}/"):
        return True
    if filt in (
        f"/ext/ntp/{pk}/{dn}/response",
        f"/ota/device/upgrade/{pk}/{dn}",
        # Aliyun's Node.js device SDK subscribes these at every connect (device shadow, gateway
        # sub-device sessions); the cloud grants them. Nothing is ever delivered there here.
        f"/shadow/get/{pk}/{dn}",
        f"/ext/session/{pk}/{dn}/combine/login_reply",
        f"/ext/session/{pk}/{dn}/combine/logout_reply",
        "/ext/regnwl",
        "/ext/register",
    ):
        return True
    own = f"/{pk}/{dn}/"
    if filt.startswith(own):
        rest = filt[len(own) :]
        if rest in ("user/#", "user/+", "#"):
            return True
        return custom.get(rest) in ("sub", "all")
    return False


def _ms():
    return str(int(time.time() * 1000))


class Session(asyncio.Protocol):
    """One client connection. States: new -> (auth) -> registration | device | observer."""

    transport: asyncio.Transport | None  # set by connection_made, a stream (TCP or TLS) transport

    def __init__(self, plat, tls):
        self.plat = plat
        self.tls = tls
        self.transport = None
        self.state = "new"
        self.decoder = codec.Decoder(plat.settings["max_packet"])
        self.pending = []  # packets that arrived while CONNECT was being checked
        self.closed = False
        self.clean = False  # DISCONNECT seen: no will
        self.pk = self.dn = self.client_id = None
        self.kind = None  # "regnwl", "register", "connwl", "secret", "observer"
        self.will = None
        self.keepalive = 0
        self.deadline = 0.0
        self.subs = {}  # filter -> qos
        self.next_pid = 0
        self.login_time = None
        self.timers = []
        self.close_cause = None
        self.outbuf = []  # bytes written at the end of this loop turn (one write, one syscall)
        self.perms = {}  # topic -> may this session publish there (cached: checked per message)
        self.service_topics = None  # (NTP request, property post) topics of this device
        self.backlog = 0  # bytes of this connection's messages handed over, not yet committed
        self.paused = False  # reading paused (backpressure)
        self.limited = False  # a device session: uplink limits apply
        self.tokens = self.token_bytes = 0.0  # token buckets of the uplink limits
        self.token_time = 0.0
        self.dropped = 0  # PUBLISHes dropped over the uplink limits
        self.throttle_note_at = 0.0  # no throttle event before this loop time

    # ---- asyncio callbacks

    def connection_made(self, transport):
        self.transport = cast(asyncio.Transport, transport)
        self.peer = transport.get_extra_info("peername")
        self.deadline = self.plat.now() + self.plat.settings["connect_timeout_s"]
        self.plat.conns.add(self)

    def data_received(self, data):
        if self.closed:
            return
        if self.keepalive:
            self.deadline = self.plat.now() + 1.5 * self.keepalive
        try:
            packets = self.decoder.feed(data)
        except codec.ProtocolError as e:
            return self.protocol_error(str(e))
        publish = codec.Publish
        for p in packets:
            if self.closed:
                return
            if self.state == "auth":
                self.pending.append(p)
            elif type(p) is publish and self.state != "new":
                self.on_publish(p)
            else:
                self.handle(p)
        plat = self.plat
        if self.state == "auth":  # a registration is being written: read on once it is answered
            self.pause()
        if plat.backlog > plat.peak_backlog:
            plat.peak_backlog = plat.backlog
        if self.backlog > plat.conn_bound or plat.backlog > plat.bound:
            plat.pressure(self)

    def connection_lost(self, exc):
        self.finish(self.close_cause or ("client_disconnect" if self.clean else "connection_lost"))

    def eof_received(self):
        return False

    # ---- helpers

    def send(self, data):
        """Write now, after whatever this session has queued (packet order is kept)."""
        if self.closed:
            return
        if self.outbuf:
            self.outbuf.append(data)
            self.flush_out()
        else:
            assert self.transport is not None
            self.transport.write(data)

    def send_soon(self, data):
        """Queue bytes written at the end of this event-loop turn (or once the current batch
        of commit callbacks has run): one write, one TLS record, one syscall for all the
        PUBACKs and routed messages this connection gets in the turn."""
        if self.closed:
            return
        if not self.outbuf:
            self.plat.mark_dirty(self)
        self.outbuf.append(data)

    def charge(self, nbytes):
        """nbytes more of this session's work wait for the writer."""
        self.backlog += nbytes
        self.plat.backlog += nbytes

    def committed(self, nbytes, packet_id, ok):
        """An item this session handed to the writer is committed (ok) or failed: its bytes
        leave the backlog; a committed QoS 1 PUBLISH is acknowledged (Writer.message_owned)."""
        self.backlog -= nbytes
        plat = self.plat
        plat.backlog -= nbytes
        if packet_id is not None and ok:
            self.send_soon(_PUBACK(0x40, 2, packet_id))
        if self.paused and self.may_read():
            self.resume()

    def may_read(self):
        plat = self.plat
        return (
            not plat.all_paused and self.backlog <= plat.conn_bound // 2 and self.state != "auth"
        )

    def pause(self):
        if self.paused or self.closed:
            return
        self.paused = True
        self.plat.paused.add(self)
        assert self.transport is not None
        self.transport.pause_reading()

    def resume(self):
        self.paused = False
        self.plat.paused.discard(self)
        if not self.closed:
            assert self.transport is not None
            self.transport.resume_reading()

    def over_limit(self, p):
        """The uplink limit this PUBLISH exceeds ("uplink_qps", "uplink_bytes"), or None and
        its cost taken: token buckets refilled at the limit, holding at most one second."""
        plat = self.plat
        now = plat.loop.time()
        dt, self.token_time = now - self.token_time, now
        qps, bps = plat.uplink_qps, plat.uplink_bps
        cost = len(p.payload) + len(p.topic)
        if qps:
            self.tokens = min(qps, self.tokens + dt * qps)
            if self.tokens < 1:
                return "uplink_qps"
        if bps:
            self.token_bytes = min(bps, self.token_bytes + dt * bps)
            if self.token_bytes < cost:
                return "uplink_bytes"
        self.tokens -= 1
        self.token_bytes -= cost
        return None

    def throttle(self, cause):
        """Drop a PUBLISH over a limit; record a throttle event at most once a second."""
        plat = self.plat
        self.dropped += 1
        plat.throttled += 1
        now = plat.loop.time()
        if now >= self.throttle_note_at:
            self.throttle_note_at = now + 1.0
            limit = plat.uplink_qps if cause == "uplink_qps" else plat.uplink_bps
            unit = "messages" if cause == "uplink_qps" else "bytes"
            detail = f"over {limit} {unit}/s; {self.dropped} dropped on this connection"
            plat.writer.event("throttle", self.pk, self.dn, self.client_id, cause, detail, self)

    def flush_out(self):
        out, self.outbuf = self.outbuf, []
        if not out or self.closed:
            return
        transport = self.transport
        assert transport is not None
        transport.write(out[0] if len(out) == 1 else b"".join(out))
        if transport.get_write_buffer_size() > self.plat.settings["slow_consumer_bytes"]:
            self.close("slow_consumer", abort=True)

    def close(self, cause, abort=False):
        if self.closed:
            return
        if self.outbuf and not abort:
            self.flush_out()  # what was queued for this client still goes out before the close
            if self.closed:
                return
        self.close_cause = self.close_cause or cause
        self.finish(cause)
        assert self.transport is not None
        if abort:
            self.transport.abort()
        else:
            self.transport.close()

    def finish(self, cause):
        """Leave the platform exactly once: will, online table, disconnect event."""
        if self.closed:
            return
        self.closed = True
        plat = self.plat
        plat.conns.discard(self)
        plat.paused.discard(self)
        for t in self.timers:
            t.cancel()
        for f in list(self.subs):
            plat.unsubscribe(self, f)
        if self.kind in ("connwl", "secret", "observer", "regnwl", "register"):
            if self.kind in ("connwl", "secret") and plat.online.get((self.pk, self.dn)) is self:
                del plat.online[(self.pk, self.dn)]
                plat.writer.submit(_session_end, (self.pk, self.dn, self.login_time))
            if self.will and not self.clean and cause != "server_stop":
                topic, payload, qos = self.will
                if self.kind == "observer" or can_publish(self.pk, self.dn, topic, plat.custom):
                    plat.inbound(self, topic, payload, qos, None)
            plat.writer.event("disconnect", self.pk, self.dn, self.client_id, cause)

    def protocol_error(self, detail):
        log.info("platform: protocol error from %s: %s", self.peer, detail)
        self.plat.writer.event(
            "protocol_error", self.pk, self.dn, self.client_id, "protocol_error", detail
        )
        self.close("protocol_error", abort=True)

    def refuse(self, cause, detail="", pk=None, dn=None):
        code = self.plat.codes.get(cause, 4)
        log.info("platform: refused %s (%s%s) code %d", self.client_id, cause, ": " + detail, code)
        self.plat.writer.event("refuse", pk, dn, self.client_id, cause, detail or None)
        self.send(codec.encode_connack(code))
        self.close("refused")

    def pid(self):
        self.next_pid = self.next_pid % 65535 + 1
        return self.next_pid

    def deliver(self, topic, payload, qos):
        if self.closed:
            return
        if qos:
            self.send_soon(codec.encode_publish(topic, payload, 1, self.pid()))
        else:
            self.send_soon(codec.encode_publish(topic, payload))

    # ---- packets

    def handle(self, p):
        t = p.type if isinstance(p, codec.Packet) else None
        if self.state == "new":
            if not isinstance(p, codec.Connect):
                return self.protocol_error("first packet is not CONNECT")
            return self.on_connect(p)
        if isinstance(p, codec.Connect):
            return self.protocol_error("second CONNECT on a connection")
        if isinstance(p, codec.Publish):
            return self.on_publish(p)
        if t == codec.PINGREQ:
            return self.send(codec.PINGRESP_BYTES)
        if t == codec.DISCONNECT:
            self.clean = True
            return self.close("client_disconnect")
        if t == codec.SUBSCRIBE:
            return self.on_subscribe(p)
        if t == codec.UNSUBSCRIBE:
            assert p.items is not None  # the decoder refuses an UNSUBSCRIBE without topics
            for f in p.items:
                self.plat.unsubscribe(self, f)
            return self.send(codec.encode_unsuback(p.packet_id))
        if t == codec.PUBACK:
            return None
        return self.protocol_error(f"unexpected packet type {t} from a client")

    def on_connect(self, c):
        plat = self.plat
        self.client_id = c.client_id
        if (c.protocol, c.level) not in (("MQTT", 4), ("MQIsdp", 3)):
            return self.refuse("unsupported_protocol", f"{c.protocol} level {c.level}")
        if plat.refuse_count > 0:
            plat.refuse_count -= 1
            self.send(codec.encode_connack(plat.refuse_code))
            plat.writer.event("refuse", None, None, c.client_id, "injected")
            return self.close("refused")
        try:
            prefix, params = auth.parse_client_id(c.client_id)
            if c.username == plat.settings["observer"] and plat.settings["observer_password"]:
                return self.login_observer(c)
            dn, pk = auth.parse_username(c.username)
            self.pk, self.dn = pk, dn
            auth_type = params.get("authType")
            if auth_type in ("regnwl", "register"):
                return self.register(c, auth_type, prefix, params, pk, dn)
            if c.password is None:
                raise AuthError("bad_params", "no password")
            password = c.password.decode("utf-8", "replace")
            keepalive = self.check_keepalive(c.keepalive)
            if auth_type == "connwl":
                if params.get("securemode") != "-2":
                    raise AuthError("bad_params", "connwl needs securemode=-2")
                self.check_token(pk, dn, prefix, password)
                self.kind = "connwl"
            elif auth_type is None and "securemode" in params:
                self.check_device_secret(pk, dn, prefix, params, password)
                self.kind = "secret"
            else:
                raise AuthError("bad_params", f"unknown authType {auth_type!r}")
        except AuthError as e:
            return self.refuse(e.cause, e.detail, self.pk, self.dn)
        self.will = (c.will_topic, c.will_payload, min(c.will_qos, 1)) if c.will_topic else None
        self.client_id = prefix
        self.login(keepalive)

    def check_keepalive(self, ka):
        s = self.plat.settings
        if ka < s["keepalive_min"]:
            raise AuthError("keepalive_too_short", f"keepalive {ka} < {s['keepalive_min']} s")
        if ka > s["keepalive_max"]:
            if s["keepalive_above_max"] == "refuse":
                raise AuthError("keepalive_too_long", f"keepalive {ka} > {s['keepalive_max']} s")
            ka = s["keepalive_max"]
        return ka

    def check_token(self, pk, dn, client_id, token):
        rc = self.plat.rconn
        if registry.product(rc, pk) is None:
            raise AuthError("unknown_product")
        dev = registry.device(rc, pk, dn)
        if dev is None:
            raise AuthError("unknown_device")
        row = registry.client_id_row(rc, pk, dn, client_id)
        if row is None:
            raise AuthError("unknown_client_id")
        if not hmac.compare_digest(row["token_hash"], auth.token_hash(token)):
            raise AuthError("bad_token")
        if row["state"] != "active":
            raise AuthError("revoked_client_id")
        if dev["status"] != "enabled":
            raise AuthError("device_disabled")

    def check_device_secret(self, pk, dn, client_id, params, password):
        if params.get("securemode") not in ("2", "3", "-2"):
            raise AuthError("bad_params", "securemode must be 2 or 3")
        method = params.get("signmethod", "").lower()
        if method not in auth.SIGN_METHODS:
            raise AuthError("bad_signmethod", "signmethod must be hmacsha1/256/md5")
        rc = self.plat.rconn
        if registry.product(rc, pk) is None:
            raise AuthError("unknown_product")
        dev = registry.device(rc, pk, dn)
        if dev is None or not dev["device_secret"]:
            raise AuthError("unknown_device")
        if dev["status"] != "enabled":
            raise AuthError("device_disabled")
        fields = {"clientId": client_id, "deviceName": dn, "productKey": pk}
        if "timestamp" in params:
            fields["timestamp"] = params["timestamp"]
        auth.check_signature(method, dev["device_secret"], fields, password)

    def login_observer(self, c):
        want = self.plat.settings["observer_password"].encode()
        if not hmac.compare_digest(want, c.password or b""):
            return self.refuse("bad_password")
        self.kind = "observer"
        self.keepalive = c.keepalive
        self.state = "observer"
        self.send(codec.encode_connack(0))
        self.plat.writer.event("login", None, None, c.client_id, "observer")

    def login(self, keepalive):
        plat = self.plat
        key = (self.pk, self.dn)
        old = plat.online.get(key)
        if old is not None and old is not self:
            plat.writer.event("kick", self.pk, self.dn, old.client_id, "duplicate_login")
            old.close("kicked")
        plat.online[key] = self
        self.keepalive = keepalive
        self.deadline = plat.now() + 1.5 * keepalive
        self.state = "device"
        self.limited = bool(plat.uplink_qps or plat.uplink_bps)
        self.tokens, self.token_bytes = plat.uplink_qps, plat.uplink_bps  # buckets start full
        self.token_time = plat.now()
        self.login_time = time.time()
        plat.writer.submit(_session_start, (self.pk, self.dn, self.client_id, self.login_time))
        plat.writer.event("login", self.pk, self.dn, self.client_id, self.kind)
        self.send(codec.encode_connack(0))

    def register(self, c, auth_type, prefix, params, pk, dn):
        plat = self.plat
        if not self.tls:
            raise AuthError("plain_tcp", "registration needs TLS")
        if params.get("securemode") not in ("2", "-2"):
            raise AuthError("bad_params", "securemode must be 2 or -2")
        method = params.get("signmethod", "")
        if method.lower() not in auth.SIGN_METHODS:
            raise AuthError("bad_signmethod", "signmethod must be hmacsha1/256/md5")
        random = params.get("random")
        if not random or not auth.RANDOM.match(random):
            raise AuthError("bad_params", "random missing or malformed")
        if not c.password:
            raise AuthError("bad_params", "no password")
        prod = registry.product(plat.rconn, pk)
        if prod is None:
            raise AuthError("unknown_product")
        if not prod["dynamic_registration"]:
            raise AuthError("dynamic_registration_off")
        auth.check_signature(
            method.lower(),
            prod["product_secret"],
            {"deviceName": dn, "productKey": pk, "random": random},
            c.password.decode("utf-8", "replace"),
        )
        self.kind = auth_type
        self.state = "auth"
        if auth_type == "regnwl":
            op = _activate
            args = (pk, dn, plat.settings["activation_limit"], self.client_id)
        else:
            op = _issue_secret
            args = (pk, dn, self.client_id)
        plat.writer.submit(op, args, self.registered)

    def registered(self, result):
        if self.closed:
            return
        if isinstance(result, Exception):
            self.kind = None
            if isinstance(result, AuthError):
                return self.refuse(result.cause, result.detail, self.pk, self.dn)
            return self.refuse("server_error", str(result), self.pk, self.dn)
        self.state = "registration"
        self.send(codec.encode_connack(0))
        if self.kind == "regnwl":
            client_id, token = result
            body = {
                "productKey": self.pk,
                "deviceName": self.dn,
                "clientId": client_id,
                "deviceToken": token,
            }
            topic = "/ext/regnwl"
        else:
            body = {"productKey": self.pk, "deviceName": self.dn, "deviceSecret": result}
            topic = "/ext/register"
        payload = json.dumps(body, separators=(",", ":")).encode()
        plat = self.plat
        if plat.reply_override is not None:
            payload = (
                plat.reply_override(body)
                if callable(plat.reply_override)
                else (plat.reply_override)
            )
        qos = plat.settings["registration_reply_qos"]
        if not plat.withhold_reply:
            if plat.reply_delay_s > 0:
                self.timers.append(
                    plat.loop.call_later(plat.reply_delay_s, self.deliver, topic, payload, qos)
                )
            else:
                self.deliver(topic, payload, qos)
        self.timers.append(plat.loop.call_later(plat.linger_s, self.close, "linger"))
        pending, self.pending = self.pending, []
        for p in pending:
            if self.closed:
                break
            self.handle(p)
        if self.paused and self.may_read():
            self.resume()

    def on_subscribe(self, p):
        codes = []
        for f, q in p.items:
            ok = self.kind == "observer" or (
                self.state == "device" and can_subscribe(self.pk, self.dn, f, self.plat.custom)
            )
            if self.state == "registration":
                ok = f in ("/ext/regnwl", "/ext/register")
            if ok:
                g = min(q, 1)
                self.plat.subscribe(self, f, g)
                codes.append(g)
            else:
                self.plat.writer.event(
                    "forbidden", self.pk, self.dn, self.client_id, "subscribe", f
                )
                codes.append(0x80)
        self.send(codec.encode_suback(p.packet_id, codes))

    def on_publish(self, p):
        if p.qos == 2:
            return self.protocol_error("QoS 2 is not supported")
        if self.limited:
            cause = self.over_limit(p)
            if cause is not None:
                return self.throttle(cause)
        plat = self.plat
        allowed = self.perms.get(p.topic)
        if allowed is None:
            allowed = self.kind == "observer" or (
                self.state == "device" and can_publish(self.pk, self.dn, p.topic, plat.custom)
            )
            if self.state in ("device", "observer"):  # final states: the answer cannot change
                if len(self.perms) >= 64:
                    self.perms.clear()
                self.perms[p.topic] = allowed
        if not allowed:
            # Aliyun acknowledges a forbidden PUBLISH and drops it; the connection stays.
            w = plat.writer
            w.event("forbidden", self.pk, self.dn, self.client_id, "publish", p.topic, self)
            if p.qos:
                self.charge(_ITEM_BYTES)
                w.submit(_noop, (), (self, p.packet_id, _ITEM_BYTES))
            return
        plat.inbound(self, p.topic, p.payload, p.qos, p.packet_id)


def _noop(conn):
    return None


_PUBACK = struct.Struct("!BBH").pack
# What a stored message costs in the backlog beyond its topic and payload (row, item, tuple).
_ITEM_BYTES = 200


def _activate(conn, pk, dn, limit, cid):
    client_id, token = registry.activate(conn, pk, dn, limit)
    registry.add_event(conn, "register", pk, dn, cid, "regnwl", client_id)
    return client_id, token


def _issue_secret(conn, pk, dn, cid):
    ds = registry.issue_device_secret(conn, pk, dn)
    registry.add_event(conn, "register", pk, dn, cid, "register")
    return ds


def _session_start(conn, pk, dn, client_id, since):
    conn.execute("INSERT OR REPLACE INTO sessions VALUES (?, ?, ?, ?)", (pk, dn, client_id, since))


def _session_end(conn, pk, dn, since):
    conn.execute(
        "DELETE FROM sessions WHERE product_key = ? AND device_name = ? AND since = ?",
        (pk, dn, since),
    )


class Platform:
    """The emulator. start() runs it in a background thread; stop() stops it; restartable."""

    def __init__(
        self,
        state_dir,
        bind="127.0.0.1",
        mqtt_port=0,
        mqtts_port=0,
        linger_s=15.0,
        https_port=0,
        **settings,
    ):
        unknown = set(settings) - set(DEFAULT_SETTINGS)
        if unknown:
            raise ValueError(
                f"unknown platform setting(s) {sorted(unknown)}; known: {sorted(DEFAULT_SETTINGS)}"
            )
        self.state_dir = Path(state_dir)
        self.bind = bind
        self.mqtt_port, self.mqtts_port, self.https_port = mqtt_port, mqtts_port, https_port
        self.linger_s = float(linger_s)
        self.settings = dict(DEFAULT_SETTINGS, **settings)
        self.settings["observer"] = "observer"
        if self.settings["keepalive_above_max"] not in ("clamp", "refuse"):
            raise ValueError("keepalive_above_max must be 'clamp' or 'refuse'")
        self.codes = dict(DEFAULT_CODES, **self.settings["refuse_codes"])
        self.custom = dict(DEFAULT_CUSTOM, **self.settings["custom_topics"])
        https_codes = {k: tuple(v) for k, v in self.settings["https_codes"].items()}
        self.https_codes = dict(https.DEFAULT_HTTPS_CODES, **https_codes)
        self.ssl_context, ca = tls.server_context(
            self.state_dir, self.settings["tls_chain"], self.settings["tls_max_version"]
        )
        self.ca_path = str(ca)
        self.registry = registry.Registry(self.state_dir)
        self._lock = StateLock(self.state_dir)
        self.pid = os.getpid()
        self.loop: _Loop | None = None  # set by start(), runs in self._thread
        self._thread: threading.Thread | None = None
        self._servers = []
        self.conns = set()
        self.online = {}
        self.subs = {}  # literal filter -> {session: qos}
        self.wild = {}  # literal prefix before the first wildcard -> {(filter, session): qos}
        self.refuse_count, self.refuse_code = 0, 3
        self.dirty = []  # sessions with queued output (see Session.send_soon)
        self._flush_scheduled = False
        self._gc_frozen_at = 0  # connections when the collector's objects were last frozen
        self.reply_delay_s, self.withhold_reply = 0.0, False
        self.reply_override = None  # fault: bytes sent instead of the real registration result
        st = self.settings
        self.uplink_qps = float(st["uplink_qps"] or 0)
        self.uplink_bps = float(st["uplink_bytes_per_s"] or 0)
        self.conn_bound = int(st["connection_backlog_bytes"])
        self.bound = int(st["backlog_bytes"])
        if self.uplink_qps < 0 or self.uplink_bps < 0 or self.conn_bound < 1 or self.bound < 1:
            raise ValueError("uplink limits must be >= 0 and backlog bounds >= 1 byte")
        self.backlog = 0  # bytes accepted from all connections and not yet committed
        self.paused = set()  # sessions whose reading is paused
        self.all_paused = False  # the whole server is over its backlog bound
        self.pauses = self.throttled = self.peak_backlog = 0  # counters (stats())
        self.open_files = None  # (soft limit, hard limit) after start
        self.ota = ota.OtaService(self, **self.settings["ota"])
        # operator commands to devices: made at start(), with the registry connection it reads
        self.downlink: downlink.Downlink | None = None

    # ---- lifecycle

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    @property
    def running(self):
        return self._thread is not None and self._thread.is_alive()

    def start(self, timeout=30.0):
        if self.running:
            raise RuntimeError("platform already running")
        self._lock.acquire()  # StateBusy before anything in the state folder changes
        try:
            return self._start(timeout)
        except BaseException:
            self._lock.release()
            raise

    def _start(self, timeout):
        self.open_files = raise_open_files() if self.settings["raise_open_files"] else None
        ready = threading.Event()
        failure = []
        loop = self.loop = _Loop(self.settings["ssl_read_buffer"])

        def run():
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._startup())
            except BaseException as e:
                failure.append(e)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.close()

        thread = self._thread = threading.Thread(target=run, name="platform", daemon=True)
        thread.start()
        if not ready.wait(timeout):
            raise RuntimeError("platform did not start in time")
        if failure:
            thread.join()
            self._thread = None
            raise failure[0]
        return self

    def stop(self, timeout=30.0):
        if not self.running:
            return
        loop, thread = self.loop, self._thread
        assert loop is not None and thread is not None  # running: start() set both
        fut = asyncio.run_coroutine_threadsafe(self._shutdown(), loop)
        try:
            fut.result(timeout)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout)
            self._thread = None
            self._lock.release()

    def close(self):
        self.stop()
        self.registry.close()

    async def _startup(self):
        loop = self.loop
        assert loop is not None
        loop.set_exception_handler(_quiet_exceptions)
        self.rconn = registry.connect(self.state_dir)
        self.rconn.execute("DELETE FROM sessions")  # nobody is online after a (re)start
        self.generation = registry.generation(self.rconn)
        self.downlink = downlink.Downlink(self)
        self.writer = Writer(
            self.state_dir,
            loop,
            self.settings["batch_window_s"],
            self.settings["synchronous"],
        )
        self.writer.after_batch = self._after_batch
        try:
            await self._listen()
        except BaseException:
            for s in self._servers:
                s.close()
            self._servers = []
            self.writer.stop()
            self.rconn.close()
            raise
        self.ota.start()
        self._ticker = loop.create_task(self._tick())
        log.info(
            "platform: listening mqtt (TLS or TCP) %s, mqtts %s, https %s",
            self.mqtt_port,
            self.mqtts_port,
            self.https_port,
        )

    async def _listen(self):
        """The legacy public endpoint's port (TLS or plain TCP), the TLS-only port of new
        public and Enterprise instances, and HTTPS registration; every TLS handshake must end
        within connect_timeout_s."""
        loop, ctx, timeout = self.loop, self.ssl_context, self.settings["connect_timeout_s"]
        assert loop is not None
        self._servers = []
        legacy = OnePortListener(
            loop, self.bind, self.mqtt_port, lambda t: Session(self, t), ctx, timeout
        )
        self._servers.append(legacy)
        secure = await loop.create_server(
            lambda: Session(self, True),
            self.bind,
            self.mqtts_port,
            ssl=ctx,
            ssl_handshake_timeout=timeout,
            reuse_address=True,
            backlog=4096,
        )
        self._servers.append(secure)
        for sock in secure.sockets:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        web = await loop.create_server(
            lambda: https.Request(self),
            self.bind,
            self.https_port,
            ssl=ctx,
            ssl_handshake_timeout=timeout,
            reuse_address=True,
        )
        self._servers.append(web)
        self.mqtt_port, self.mqtts_port, self.https_port = (
            s.sockets[0].getsockname()[1] for s in (legacy, secure, web)
        )

    async def _unlisten(self, drop):
        for s in self._servers:
            s.close()
        for s in self._servers:
            await s.wait_closed() if not drop else None
        self._servers = []
        if drop:
            for c in list(self.conns):
                c.close("server_stop", abort=True)

    async def _shutdown(self):
        self._ticker.cancel()
        self.ota.stop()
        if self._gc_frozen_at:
            gc.unfreeze()
            self._gc_frozen_at = 0
        await self._unlisten(drop=True)
        await asyncio.sleep(0)
        self._flush_dirty()
        self.writer.handoff()
        assert self.loop is not None
        await self.loop.run_in_executor(None, self.writer.stop)
        self.rconn.close()

    async def _tick(self):
        """Keepalive and connect deadlines, linger, and operator changes made elsewhere."""
        while True:
            step = max(0.05, min(0.5, self.settings["keepalive_min"] / 8))
            await asyncio.sleep(step)
            now = self.now()
            self._gc_policy()
            for c in list(self.conns):
                if c.paused:  # its bytes wait in the kernel: not silent
                    c.deadline = max(c.deadline, now + 1.5 * c.keepalive)
                if c.state != "registration" and now > c.deadline and c.deadline:
                    if c.state == "new":
                        c.close("connect_timeout", abort=True)
                    elif c.state in ("device", "observer") and c.keepalive:
                        c.close("keepalive_timeout", abort=True)
            try:
                self.ota.tick()
            except Exception:  # neither may a failing OTA query
                log.exception("platform: OTA tick failed")
            try:
                assert self.downlink is not None  # start() made it before the ticker
                self.downlink.poll()
            except Exception:  # nor a failing downlink poll
                log.exception("platform: downlink poll failed")
            try:
                gen = registry.generation(self.rconn)
            except Exception:  # a locked database must not stop the ticker
                log.debug("platform: ticker", exc_info=True)
                continue
            if gen != self.generation:
                self.generation = gen
                self._recheck_sessions()

    def _recheck_sessions(self):
        """Operator actions (disable, delete, keep, clear) end sessions they invalidate."""
        rc = self.rconn
        for (pk, dn), s in list(self.online.items()):
            dev = registry.device(rc, pk, dn)
            ok = dev is not None and dev["status"] == "enabled"
            if ok and s.kind == "connwl":
                row = registry.client_id_row(rc, pk, dn, s.client_id)
                ok = row is not None and row["state"] == "active"
            if not ok:
                self.writer.event("kick", pk, dn, s.client_id, "operator")
                s.close("operator", abort=True)

    def now(self):
        assert self.loop is not None  # called on the loop: start() set it
        return self.loop.time()

    def files_left(self):
        """How many more file descriptors this process may open (soft limit - open now)."""
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        try:
            used = len(os.listdir("/proc/self/fd"))
        except OSError:
            used = len(os.listdir("/dev/fd"))
        return (soft if soft != resource.RLIM_INFINITY else 1 << 20) - used

    def _gc_policy(self):
        """Keep full garbage collections short when thousands of devices are connected.

        Each connection holds dozens of objects the cyclic collector tracks (session, TLS
        protocol and transports, buffers); with 4,000 connections a full collection walks
        them all and stops the loop for 50-100 ms, which every device then sees as routing
        latency. Once many connections have arrived (gc_freeze_connections, and 25 % more
        since the last time) the objects alive now are frozen: collections skip them. When the
        count falls below half of what it was, they are unfrozen, so the sessions that closed
        meanwhile are collected. Memory stays bounded by what was alive at the peak.
        """
        limit = self.settings["gc_freeze_connections"]
        if not limit:
            return
        n = len(self.conns)
        if n >= limit and n >= 1.25 * self._gc_frozen_at:
            gc.freeze()
            self._gc_frozen_at = n
        elif self._gc_frozen_at and n < self._gc_frozen_at / 2:
            gc.unfreeze()
            self._gc_frozen_at = 0

    def mark_dirty(self, s):
        """s has output queued: write it at the end of this loop turn."""
        self.dirty.append(s)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            assert self.loop is not None
            self.loop.call_soon(self._flush_dirty)

    def _flush_dirty(self):
        self._flush_scheduled = False
        dirty, self.dirty = self.dirty, []
        for s in dirty:
            s.flush_out()

    def _after_batch(self):
        self._flush_dirty()
        if self.all_paused and self.backlog <= self.bound // 2:
            self.all_paused = False
            for s in [s for s in self.paused if s.may_read()]:
                s.resume()

    # ---- backpressure

    def pressure(self, s):
        """s just handed over work: pause its reading while its own backlog is over the
        connection bound, every connection's while the server's is over the server bound.
        Reading resumes (Session.committed, _after_batch) below half the bound."""
        if s.backlog > self.conn_bound and not s.paused:
            self.pauses += 1
            s.pause()
        if self.backlog > self.bound and not self.all_paused:
            self.all_paused = True
            self.pauses += 1
            for c in list(self.conns):
                c.pause()

    def stats(self):
        """Backpressure and limit counters (thread-safe; for tests and the bench)."""

        def get():
            return {
                "backlog_bytes": self.backlog,
                "peak_backlog_bytes": self.peak_backlog,
                "paused_now": len(self.paused),
                "pauses": self.pauses,
                "throttled": self.throttled,
                "connections": len(self.conns),
            }

        return self._call(get)

    # ---- routing

    def subscribe(self, s, f, qos):
        s.subs[f] = qos
        if "+" in f or "#" in f:
            levels = []
            for lv in f.split("/"):
                if lv in ("+", "#"):
                    break
                levels.append(lv)
            self.wild.setdefault("/".join(levels), {})[(f, s)] = qos
        else:
            self.subs.setdefault(f, {})[s] = qos

    def unsubscribe(self, s, f):
        if s.subs.pop(f, None) is None:
            return
        if "+" in f or "#" in f:
            levels = []
            for lv in f.split("/"):
                if lv in ("+", "#"):
                    break
                levels.append(lv)
            key = "/".join(levels)
            d = self.wild.get(key)
            if d is not None:
                d.pop((f, s), None)
                if not d:
                    del self.wild[key]
        else:
            d = self.subs.get(f)
            if d is not None:
                d.pop(s, None)
                if not d:
                    del self.subs[f]

    def route(self, topic, payload, qos):
        """Deliver to every matching subscription (a session gets one copy, highest QoS)."""
        exact = self.subs.get(topic)
        targets = dict(exact) if exact else {}
        if self.wild:
            levels = topic.split("/")
            for k in range(len(levels) + 1):
                d = self.wild.get("/".join(levels[:k]))
                if d:
                    for (f, s), q in d.items():
                        if codec.topic_matches(f, topic) and targets.get(s, -1) < q:
                            targets[s] = q
        for s, q in targets.items():
            s.deliver(topic, payload, min(q, qos))
        return targets

    def inbound(self, s, topic, payload, qos, packet_id):
        """An accepted PUBLISH: store, route, answer platform services, PUBACK after commit."""
        row = (time.time(), s.pk, s.dn, s.client_id, topic, qos, payload)
        n = len(payload) + len(topic) + _ITEM_BYTES
        s.backlog += n
        self.backlog += n
        self.writer.message_owned(row, s, packet_id if qos else None, n)
        if self.subs or self.wild:
            self.route(topic, payload, qos)
        dl = self.downlink
        assert dl is not None  # devices connect only after start()
        if s.pk and topic.startswith("/") and not dl.inbound(s, topic, payload):
            self.services(s, topic, payload)

    def services(self, s, topic, payload):
        pk, dn = s.pk, s.dn
        if topic[:5] == "/ota/" or topic.endswith("/ota/firmware/get"):
            return self.ota.on_message(s, topic, payload)
        st = s.service_topics
        if st is None:
            st = (f"/ext/ntp/{pk}/{dn}/request", f"/sys/{pk}/{dn}/thing/event/property/post")
            s.service_topics = st
        if topic != st[0] and topic != st[1]:
            return
        if topic == st[0]:
            recv = _ms()
            try:
                body = json.loads(payload)
                sent = str(body["deviceSendTime"])
            except (ValueError, KeyError, TypeError):
                return
            reply = {"deviceSendTime": sent, "serverRecvTime": recv, "serverSendTime": _ms()}
            self.reply(s, f"/ext/ntp/{pk}/{dn}/response", reply)
        else:
            body = downlink.json_object(payload)
            if body is None:
                return
            ack = (body.get("sys") or {}).get("ack", 1) if isinstance(body.get("sys"), dict) else 1
            if str(ack) == "0":
                return
            reply = {
                "id": str(body.get("id", "")),
                "code": 200,
                "data": {},
                "message": "success",
                "method": "thing.event.property.post",
                "version": str(body.get("version", "1.0")),
            }
            self.reply(s, topic + "_reply", reply)

    def reply(self, s, topic, body):
        payload = json.dumps(body, separators=(",", ":")).encode()
        targets = self.route(topic, payload, 0)
        if s not in targets and self.settings["reply_to_requester"]:
            s.deliver(topic, payload, 0)

    # ---- thread-safe controls (operator, tests, fault injection)

    def _call(self, fn, *args, timeout=10.0):
        if not self.running:
            raise RuntimeError("platform is not running")

        async def run():
            return fn(*args)

        assert self.loop is not None  # running
        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout)

    def add_product(self, *a, **kw):
        return self.registry.add_product(*a, **kw)

    def publish(self, topic, payload, qos=0):
        """Cloud-to-device message (like Aliyun's Pub API): route to subscribers now."""
        if isinstance(payload, str):
            payload = payload.encode()
        return len(self._call(self.route, topic, bytes(payload), min(qos, 1)))

    def refuse_next(self, n, code=3):
        """Refuse the next n CONNECTs (any kind) with CONNACK `code`."""

        def set_():
            self.refuse_count, self.refuse_code = int(n), int(code)

        self._call(set_)

    def drop(self, device_name, product_key=None):
        """Cut a device's connection(s) without DISCONNECT (its will fires); returns how many."""

        def run():
            hit = [
                c
                for c in self.conns
                if c.dn == device_name and (product_key is None or c.pk == product_key)
            ]
            for c in hit:
                self.writer.event("kick", c.pk, c.dn, c.client_id, "dropped")
                c.close("dropped", abort=True)
            return len(hit)

        return self._call(run)

    def mute_replies(self, device_name, on=True):
        """Fault: drop this device's answers to commands, as if it never answered."""
        dl = self.downlink
        assert dl is not None, "start() the platform first"
        self._call((dl.silent.add if on else dl.silent.discard), device_name)

    def delay_registration_reply(self, seconds):
        """Push the /ext/regnwl result this many seconds after CONNACK (0: at once)."""
        self._call(setattr, self, "reply_delay_s", float(seconds))

    def withhold_registration_reply(self, on=True):
        """CONNACK 0 but never send the registration result (the session still lingers)."""
        self._call(setattr, self, "withhold_reply", bool(on))

    def corrupt_registration_reply(self, payload=None):
        """Fault: after CONNACK 0 send `payload` (bytes, or a function of the real result dict
        returning bytes) instead of the real result; None restores the real one. The slot is
        spent all the same, as a reply lost on the way would spend it."""
        self._call(setattr, self, "reply_override", payload)

    def stop_listening(self, drop_connections=True):
        """Close both listeners (and by default every connection); the state stays."""
        assert self.loop is not None, "platform was never started"
        asyncio.run_coroutine_threadsafe(self._unlisten(drop_connections), self.loop).result(10)

    def start_listening(self):
        """Listen again on the same ports."""
        assert self.loop is not None, "platform was never started"
        asyncio.run_coroutine_threadsafe(self._listen(), self.loop).result(10)

    def connections(self):
        """[(kind, pk, dn, client_id)] of the open sessions (for tests)."""
        return self._call(
            lambda: sorted(
                (c.kind or c.state, c.pk, c.dn, c.client_id) for c in self.conns if not c.closed
            )
        )

    def flush(self):
        """Wait until everything accepted so far is committed."""
        done = threading.Event()
        self._call(lambda: self.writer.submit(_noop, (), lambda _r: done.set()))
        if not done.wait(10):
            raise RuntimeError("platform writer did not commit in time")


def raise_open_files(ceiling=1 << 20):
    """Raise this process's soft open-file limit to its hard limit (at most `ceiling` when the
    hard limit is unlimited): every connection is a descriptor, and at the usual soft limit of
    1,024 idle sockets would lock logins out. Returns (soft, hard) in force afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = ceiling if hard == resource.RLIM_INFINITY else hard
    if soft == resource.RLIM_INFINITY or soft >= want:
        return soft, hard
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ValueError, OSError) as e:  # e.g. macOS caps the soft limit below its hard one
        log.warning("platform: cannot raise the open-file limit to %s: %s", want, e)
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def _quiet_exceptions(loop, context):
    # Handshake failures and resets from misbehaving clients are expected; keep them at debug.
    exc = context.get("exception")
    if isinstance(exc, (ssl.SSLError, ConnectionError, OSError)):
        log.debug("platform: %s", context.get("message"))
        return
    loop.default_exception_handler(context)

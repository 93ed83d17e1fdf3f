# A tiny TLS MQTT responder for the firmware's seam tests: regnwl, connwl, SUBACK, PUBACK, PING.
# Not the platform emulator (host_tools/platform/): just enough Aliyun behaviour, with knobs for
# faults, so the firmware's own tests do not wait on it. Binds 127.0.0.1 only.
import hashlib
import hmac
import json
import select
import socket
import ssl
import struct
import threading
import time

HASHES = {"hmacsha1": hashlib.sha1, "hmacsha256": hashlib.sha256, "hmacmd5": hashlib.md5}


def _read_exact(s, n):
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            raise ConnectionError("peer closed")
        data += chunk
        # acknowledge at once: a delayed ACK (40 ms) against the device's Nagle would pace a
        # publish written in several pieces at one per 40 ms
        try:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        except (OSError, AttributeError):
            pass
    return data


def read_packet(s):
    head = _read_exact(s, 1)[0]
    n, shift = 0, 0
    while True:
        b = _read_exact(s, 1)[0]
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            break
    return head, _read_exact(s, n)


def _str(body, i):
    (n,) = struct.unpack_from("!H", body, i)
    return body[i + 2 : i + 2 + n].decode(), i + 2 + n


def encode_len(n):
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def publish_packet(topic, payload, qos=0, pid=1):
    t = topic.encode()
    body = struct.pack("!H", len(t)) + t + (struct.pack("!H", pid) if qos else b"") + payload
    return bytes([0x30 | qos << 1]) + encode_len(len(body)) + body


def parse_connect(body):
    assert body[:7] == b"\x00\x04MQTT\x04", body[:7]
    flags, keepalive = body[7], struct.unpack_from("!H", body, 8)[0]
    cid, i = _str(body, 10)
    user, i = _str(body, i) if flags & 0x80 else (None, i)
    pw, i = _str(body, i) if flags & 0x40 else (None, i)
    return {"cid": cid, "user": user, "password": pw, "keepalive": keepalive, "flags": flags}


def split_client_id(cid):
    prefix, _, ext = cid.partition("|")
    fields = dict(kv.split("=", 1) for kv in ext.rstrip("|").split(",") if "=" in kv)
    return prefix, fields


class Broker:
    """Knobs (set any time): reg_rc, conn_rc, reply (bytes or None: valid reply), down (refuse the
    next N TCP connections), silent (accept TLS, never answer), mute_after (stop answering after
    N PUBLISHes in a session)."""

    def __init__(self, certfile, products):
        self.products = products  # pk -> productSecret
        self.tokens = {}  # (pk, dn) -> (clientId, token)
        self.events = []
        self.published = []  # (topic, payload) accepted by connwl sessions
        self.pids = []  # the packet id of each (None at QoS 0)
        self.reg_rc = None
        self.conn_rc = None
        self.reply = None
        self.reply_qos = 0  # QoS of the /ext/regnwl reply (Aliyun: 0)
        self.reg_before = b""  # raw bytes sent after a registration's CONNACK 0, before the reply
        self.down = 0
        self.silent = False
        self.mute_after = None
        self.drop_after = None  # close the session (once) after N PUBLISHes
        self.downlink = None  # payload pushed on user/get right after the SUBACK
        self.pushes = []  # (topic under /sys/<pk>/<dn>/, payload): one after every 10th PUBLISH
        self.lock = threading.Lock()
        self.reg_open = set()  # registration sessions being served
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(certfile)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.stopping = False
        self.conns = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def wait(self, cond, timeout=5.0):
        """Poll cond() (server threads record events a moment after the client acted)."""
        end = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > end:
                return False
            time.sleep(0.01)
        return True

    def count(self, kind):
        with self.lock:
            return sum(1 for e in self.events if e[0] == kind)

    def _event(self, *e):
        with self.lock:
            self.events.append(e)

    def close(self):
        self.stopping = True
        self.thread.join(5)
        self.sock.close()
        for c in list(self.conns):
            try:
                c.close()
            except OSError:
                pass

    def _accept(self):
        while not self.stopping:
            try:
                raw, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            if self.down:
                self.down -= 1
                self._event("down")
                raw.close()
                continue
            self.conns.append(raw)
            threading.Thread(target=self._serve, args=(raw,), daemon=True).start()

    def _serve(self, raw):
        raw.settimeout(30)
        try:
            s = self.ctx.wrap_socket(raw, server_side=True)
        except (OSError, ssl.SSLError) as e:
            self._event("tls-fail", repr(e))
            raw.close()
            return
        self.conns.append(s)
        try:
            self._session(s)
        except (OSError, ConnectionError, AssertionError, ValueError):
            pass
        finally:
            s.close()

    def _session(self, s):
        head, body = read_packet(s)
        if self.silent:
            self._event("silent")
            time.sleep(30)
            return
        assert head == 0x10
        c = parse_connect(body)
        prefix, ext = split_client_id(c["cid"])
        dn, _, pk = (c["user"] or "").partition("&")
        if ext.get("authType") == "regnwl":
            self._register(s, c, ext, dn, pk)
            return
        rc = self.conn_rc
        if rc is None:
            known = self.tokens.get((pk, dn))
            ok = ext.get("authType") == "connwl" and known == (prefix, c["password"])
            rc = 0 if ok else 4
        # registration sessions the device has not closed (no DISCONNECT/EOF waiting) right now
        lingering = sum(1 for r in list(self.reg_open) if not select.select([r], [], [], 0)[0])
        self._event("connwl", dn, rc, c["keepalive"], lingering)
        s.sendall(bytes([0x20, 2, 0, rc]))
        if rc:
            return
        published = 0
        while True:
            head, body = read_packet(s)
            kind = head & 0xF0
            if kind == 0x30:
                qos = (head >> 1) & 3
                topic, i = _str(body, 0)
                pid = struct.unpack_from("!H", body, i)[0] if qos else None
                payload = body[i + (2 if qos else 0) :]
                published += 1
                if self.drop_after is not None and published > self.drop_after:
                    self.drop_after = None  # once: the platform drops the link
                    self._event("dropped")
                    return
                if self.mute_after is not None and published > self.mute_after:
                    self._event("muted", topic)
                    continue
                with self.lock:
                    self.published.append((topic, payload))
                    self.pids.append(pid)
                if qos:
                    s.sendall(b"\x40\x02" + struct.pack("!H", pid))
                if self.pushes and published % 10 == 0:
                    t, p = self.pushes.pop(0)
                    s.sendall(publish_packet("/sys/%s/%s/%s" % (pk, dn, t), p))
                if topic.endswith("/request") and topic.startswith("/ext/ntp/"):
                    send = json.loads(payload)["deviceSendTime"]
                    # a server 5 s ahead of the device: of its clock, as the device's clock is
                    # virtual in these tests (real time here would pull it back at each session)
                    now = str(int(send) + 5000)
                    reply = {"deviceSendTime": send, "serverRecvTime": now, "serverSendTime": now}
                    s.sendall(publish_packet(topic[:-7] + "response", json.dumps(reply).encode()))
            elif kind == 0x80:
                pid = body[:2]
                topic, _ = _str(body, 2)
                s.sendall(b"\x90\x03" + pid + b"\x01")
                if topic.endswith("/user/get") and self.downlink is not None:
                    s.sendall(publish_packet(topic, self.downlink, qos=1, pid=7))
            elif kind == 0xC0:
                self._event("ping")
                s.sendall(b"\xd0\x00")
            elif kind == 0xE0:
                self._event("disconnect", dn)
                return

    def _register(self, s, c, ext, dn, pk):
        secret = self.products.get(pk)
        method = ext.get("signmethod", "hmacsha256")
        content = "deviceName%sproductKey%srandom%s" % (dn, pk, ext.get("random"))
        good = secret is not None and hmac.compare_digest(
            hmac.new(secret.encode(), content.encode(), HASHES[method]).hexdigest(),
            (c["password"] or "").lower(),
        )
        rc = self.reg_rc if self.reg_rc is not None else (0 if good else 4)
        self._event("regnwl", dn, rc, ext)
        self.reg_open.add(s)
        try:
            self._reg_reply(s, rc, pk, dn)
        finally:
            self.reg_open.discard(s)

    def _reg_reply(self, s, rc, pk, dn):
        s.sendall(bytes([0x20, 2, 0, rc]))
        if rc:
            return
        n = len(self.tokens)
        cid, token = "cid%04d%s" % (n, dn[-4:]), "tok%04dsecret%s" % (n, dn[-4:])
        if self.reply is None:  # None: a valid reply with a fresh clientId and token
            reply = json.dumps(
                {"productKey": pk, "deviceName": dn, "clientId": cid, "deviceToken": token},
                separators=(",", ":"),
            ).encode()
            self.tokens[(pk, dn)] = (cid, token)
        else:
            reply = self.reply
        s.sendall(self.reg_before)
        if reply is not False:  # False: withhold the reply
            s.sendall(publish_packet("/ext/regnwl", reply, qos=self.reply_qos))
        s.settimeout(5)
        try:
            head, _ = read_packet(s)  # the device's DISCONNECT, or it just closes
            self._event("reg-closed", head)
        except (OSError, ConnectionError):
            self._event("reg-closed", None)

# Strict MQTT 3.1.1 codec, pure (no I/O): bytes in -> packets out, packets -> bytes.
import struct

MAX_PACKET = 256 * 1024  # Aliyun's limit; also the largest remaining length we accept

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT = 8, 9, 10, 11, 12, 13, 14

# Fixed-header flags MQTT 3.1.1 requires for each type except PUBLISH (section 2.2.2).
_FLAGS = {1: 0, 2: 0, 4: 0, 5: 0, 6: 2, 7: 0, 8: 2, 9: 0, 10: 2, 11: 0, 12: 0, 13: 0, 14: 0}


class ProtocolError(ValueError):
    """The peer broke MQTT 3.1.1: the connection must be closed."""


class Connect:
    __slots__ = (
        "protocol",
        "level",
        "clean_session",
        "keepalive",
        "client_id",
        "username",
        "password",
        "will_topic",
        "will_payload",
        "will_qos",
        "will_retain",
    )

    def __init__(self, **kw):
        for k in self.__slots__:
            setattr(self, k, kw.get(k))

    def __repr__(self):
        # Never show the password: it is a signature or a device token.
        return f"Connect(client_id={self.client_id!r}, username={self.username!r})"


class Publish:
    __slots__ = ("topic", "payload", "qos", "retain", "dup", "packet_id")

    def __init__(self, topic, payload, qos=0, retain=False, dup=False, packet_id=None):
        self.topic, self.payload, self.qos = topic, payload, qos
        self.retain, self.dup, self.packet_id = retain, dup, packet_id


class Packet:
    """Any other packet: type, packet id and, for (UN)SUBSCRIBE/SUBACK, the list of items."""

    __slots__ = ("type", "packet_id", "items", "flags", "session_present", "rc")

    def __init__(self, type, packet_id=None, items=None, flags=0, session_present=0, rc=None):
        self.type, self.packet_id, self.items, self.flags = type, packet_id, items, flags
        self.session_present, self.rc = session_present, rc


def _str(buf, pos, end, what):
    if pos + 2 > end:
        raise ProtocolError(f"truncated {what}")
    (n,) = struct.unpack_from("!H", buf, pos)
    pos += 2
    if pos + n > end:
        raise ProtocolError(f"truncated {what}")
    raw = bytes(buf[pos : pos + n])
    try:
        s = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError(f"{what} is not valid UTF-8")
    if "\x00" in s:
        raise ProtocolError(f"{what} contains U+0000")
    return s, pos + n


def _bin(buf, pos, end, what):
    if pos + 2 > end:
        raise ProtocolError(f"truncated {what}")
    (n,) = struct.unpack_from("!H", buf, pos)
    pos += 2
    if pos + n > end:
        raise ProtocolError(f"truncated {what}")
    return bytes(buf[pos : pos + n]), pos + n


def _packet_id(buf, pos, end):
    if pos + 2 > end:
        raise ProtocolError("truncated packet id")
    (pid,) = struct.unpack_from("!H", buf, pos)
    if pid == 0:
        raise ProtocolError("packet id 0")
    return pid, pos + 2


def decode_connect(buf, pos, end):
    proto, pos = _str(buf, pos, end, "protocol name")
    if pos + 4 > end:
        raise ProtocolError("truncated CONNECT")
    level, flags, keepalive = buf[pos], buf[pos + 1], struct.unpack_from("!H", buf, pos + 2)[0]
    pos += 4
    if flags & 1:
        raise ProtocolError("CONNECT reserved flag set")
    will = bool(flags & 4)
    will_qos = (flags >> 3) & 3
    if will_qos == 3 or (not will and (will_qos or flags & 0x20)):
        raise ProtocolError("bad will flags")
    if not flags & 0x80 and flags & 0x40:
        raise ProtocolError("password flag without username flag")
    client_id, pos = _str(buf, pos, end, "client id")
    c = Connect(
        protocol=proto,
        level=level,
        clean_session=bool(flags & 2),
        keepalive=keepalive,
        client_id=client_id,
        will_qos=will_qos,
        will_retain=bool(flags & 0x20),
    )
    if will:
        c.will_topic, pos = _str(buf, pos, end, "will topic")
        if not c.will_topic or "+" in c.will_topic or "#" in c.will_topic:
            # MQTT 3.1.1 section 3.1.3.3 / 4.7.1: a will topic is a topic name, never empty and
            # never a filter; mosquitto closes such a CONNECT without a CONNACK.
            raise ProtocolError("will topic empty or with a wildcard")
        c.will_payload, pos = _bin(buf, pos, end, "will message")
    if flags & 0x80:
        c.username, pos = _str(buf, pos, end, "user name")
    if flags & 0x40:
        c.password, pos = _bin(buf, pos, end, "password")
    if pos != end:
        raise ProtocolError("trailing bytes in CONNECT")
    return c


def decode_body(ptype, flags, buf, pos, end):
    """Decode one packet body buf[pos:end] whose fixed header said (ptype, flags)."""
    if ptype == PUBLISH:
        qos = (flags >> 1) & 3
        if qos == 3:
            raise ProtocolError("PUBLISH with QoS 3")
        if qos == 0 and flags & 8:
            raise ProtocolError("DUP set on QoS 0 PUBLISH")
        topic, pos = _str(buf, pos, end, "topic")
        if not topic or "+" in topic or "#" in topic:
            raise ProtocolError("bad PUBLISH topic")
        pid = None
        if qos:
            pid, pos = _packet_id(buf, pos, end)
        return Publish(topic, bytes(buf[pos:end]), qos, bool(flags & 1), bool(flags & 8), pid)
    if ptype == 0 or ptype == 15:
        raise ProtocolError(f"reserved packet type {ptype}")
    if flags != _FLAGS[ptype]:
        raise ProtocolError(f"bad flags {flags:#x} for packet type {ptype}")
    if ptype == CONNECT:
        return decode_connect(buf, pos, end)
    if ptype in (PINGREQ, PINGRESP, DISCONNECT):
        if pos != end:
            raise ProtocolError("packet should have no body")
        return Packet(ptype)
    if ptype == CONNACK:
        if end - pos != 2:
            raise ProtocolError("CONNACK length")
        return Packet(ptype, session_present=buf[pos] & 1, rc=buf[pos + 1])
    if ptype in (PUBACK, PUBREC, PUBREL, PUBCOMP, UNSUBACK):
        if end - pos != 2:
            raise ProtocolError("ack length")
        return Packet(ptype, struct.unpack_from("!H", buf, pos)[0])
    pid, pos = _packet_id(buf, pos, end)
    items = []
    if ptype == SUBACK:
        items = list(buf[pos:end])
    else:
        while pos < end:
            topic, pos = _str(buf, pos, end, "topic filter")
            check_filter(topic)
            if ptype == SUBSCRIBE:
                if pos >= end:
                    raise ProtocolError("missing requested QoS")
                q = buf[pos]
                pos += 1
                if q > 2:
                    raise ProtocolError("bad requested QoS")
                items.append((topic, q))
            else:
                items.append(topic)
        if not items:
            raise ProtocolError("no topic filters")
    return Packet(ptype, pid, items)


_U16 = struct.Struct("!H").unpack_from


def _decode_publish(flags, buf, pos, end):
    """decode_body for PUBLISH without the generic dispatch (same rules, same errors)."""
    qos = (flags >> 1) & 3
    if qos == 3:
        raise ProtocolError("PUBLISH with QoS 3")
    if qos == 0 and flags & 8:
        raise ProtocolError("DUP set on QoS 0 PUBLISH")
    if pos + 2 > end:
        raise ProtocolError("truncated topic")
    tend = pos + 2 + _U16(buf, pos)[0]
    if tend > end:
        raise ProtocolError("truncated topic")
    try:
        topic = buf[pos + 2 : tend].decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("topic is not valid UTF-8")
    if "\x00" in topic:
        raise ProtocolError("topic contains U+0000")
    if not topic or "+" in topic or "#" in topic:
        raise ProtocolError("bad PUBLISH topic")
    pid = None
    if qos:
        if tend + 2 > end:
            raise ProtocolError("truncated packet id")
        pid = _U16(buf, tend)[0]
        if pid == 0:
            raise ProtocolError("packet id 0")
        tend += 2
    return Publish(topic, bytes(buf[tend:end]), qos, bool(flags & 1), bool(flags & 8), pid)


def check_filter(f):
    if not f:
        raise ProtocolError("empty topic filter")
    levels = f.split("/")
    for i, lv in enumerate(levels):
        if "#" in lv and (lv != "#" or i != len(levels) - 1):
            raise ProtocolError("bad '#' in topic filter")
        if "+" in lv and lv != "+":
            raise ProtocolError("bad '+' in topic filter")


class Decoder:
    """Feed bytes; get complete packets. Raises ProtocolError at the first violation."""

    def __init__(self, max_packet=MAX_PACKET):
        self.buf = bytearray()
        self.max_packet = max_packet

    def feed(self, data):
        self.buf += data
        out = []
        buf = self.buf
        pos = 0
        n = len(buf)
        while n - pos >= 2:
            first = buf[pos]
            length, shift, i, complete = 0, 0, pos + 1, False
            while i < n:
                b = buf[i]
                length |= (b & 127) << shift
                i += 1
                if not b & 128:
                    complete = True
                    break
                shift += 7
                if shift >= 28:
                    raise ProtocolError("remaining length longer than 4 bytes")
            if not complete:
                break
            if length > self.max_packet:
                raise ProtocolError(f"packet of {length} bytes exceeds {self.max_packet}")
            if n - i < length:
                break
            end = i + length
            if first & 0xF0 == 0x30:  # PUBLISH, the hot path: the same checks, inlined
                out.append(_decode_publish(first & 15, buf, i, end))
            else:
                out.append(decode_body(first >> 4, first & 15, buf, i, end))
            pos = end
        if pos:
            del buf[:pos]
        return out


def _remaining(n):
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        out.append(b | 128 if n else b)
        if not n:
            return bytes(out)


def _s(s):
    b = s.encode("utf-8") if isinstance(s, str) else bytes(s)
    return struct.pack("!H", len(b)) + b


def packet(first, body):
    return bytes([first]) + _remaining(len(body)) + body


def encode_connack(rc, session_present=0):
    return bytes((0x20, 2, session_present & 1, rc))


def encode_publish(topic, payload, qos=0, packet_id=None, retain=False, dup=False):
    body = _s(topic)
    if qos:
        body += struct.pack("!H", packet_id)
    return packet(0x30 | (dup << 3) | (qos << 1) | int(retain), body + bytes(payload))


def encode_puback(packet_id):
    return struct.pack("!BBH", 0x40, 2, packet_id)


def encode_suback(packet_id, codes):
    return packet(0x90, struct.pack("!H", packet_id) + bytes(codes))


def encode_unsuback(packet_id):
    return struct.pack("!BBH", 0xB0, 2, packet_id)


PINGRESP_BYTES = b"\xd0\x00"
PINGREQ_BYTES = b"\xc0\x00"
DISCONNECT_BYTES = b"\xe0\x00"


def encode_connect(
    client_id,
    username=None,
    password=None,
    keepalive=60,
    clean_session=True,
    will=None,
    level=4,
):
    """will = (topic, payload, qos, retain) or None. Used by clients and tests."""
    flags = 2 if clean_session else 0
    payload = _s(client_id)
    if will:
        topic, msg, wq, wr = will
        flags |= 4 | (wq << 3) | (0x20 if wr else 0)
        payload += _s(topic) + _s(msg)
    if username is not None:
        flags |= 0x80
        payload += _s(username)
    if password is not None:
        flags |= 0x40
        payload += _s(password)
    name = "MQTT" if level == 4 else "MQIsdp"
    body = _s(name) + bytes((level, flags)) + struct.pack("!H", keepalive) + payload
    return packet(0x10, body)


def encode_subscribe(packet_id, filters):
    body = struct.pack("!H", packet_id)
    for f, q in filters:
        body += _s(f) + bytes((q,))
    return packet(0x82, body)


def encode_unsubscribe(packet_id, filters):
    body = struct.pack("!H", packet_id)
    for f in filters:
        body += _s(f)
    return packet(0xA2, body)


def topic_matches(filt, topic):
    """MQTT wildcard match of a topic against a filter ('+' one level, '#' the rest)."""
    if filt == topic:
        return True
    fl = filt.split("/")
    tl = topic.split("/")
    for i, f in enumerate(fl):
        if f == "#":
            return True
        if i >= len(tl):
            return False
        if f != "+" and f != tl[i]:
            return False
    return len(fl) == len(tl)

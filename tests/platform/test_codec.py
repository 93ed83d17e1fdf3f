# The MQTT 3.1.1 codec: golden bytes, strictness, and a hypothesis fuzz that it never crashes.
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from host_tools.platform import codec
from host_tools.platform.codec import Decoder, ProtocolError


def test_connect_golden_bytes_round_trip():
    raw = codec.encode_connect("dn.pk|a=1|", "dn&pk", b"pw", keepalive=60)
    assert raw == (
        b"\x10\x21\x00\x04MQTT\x04\xc2\x00\x3c\x00\x0adn.pk|a=1|\x00\x05dn&pk\x00\x02pw"
    )
    (c,) = Decoder().feed(raw)
    assert (c.client_id, c.username, c.password, c.keepalive) == ("dn.pk|a=1|", "dn&pk", b"pw", 60)
    assert "pw" not in repr(c)


def test_publish_split_across_reads_and_several_per_read():
    raw = codec.encode_publish("/a/b", b"x" * 300, 1, 7) + codec.PINGREQ_BYTES
    d = Decoder()
    out = []
    for i in range(len(raw)):
        out += d.feed(raw[i : i + 1])
    assert [type(p).__name__ for p in out] == ["Publish", "Packet"]
    assert (out[0].topic, out[0].payload, out[0].qos, out[0].packet_id) == (
        "/a/b",
        b"x" * 300,
        1,
        7,
    )
    assert out[1].type == codec.PINGREQ


def test_subscribe_and_suback():
    (p,) = Decoder().feed(codec.encode_subscribe(3, [("/a/+", 1), ("/b/#", 0)]))
    assert (p.type, p.packet_id, p.items) == (codec.SUBSCRIBE, 3, [("/a/+", 1), ("/b/#", 0)])
    assert codec.encode_suback(3, [1, 0x80]) == b"\x90\x04\x00\x03\x01\x80"


@pytest.mark.parametrize(
    "raw, why",
    [
        (b"\x00\x00", "reserved"),
        (b"\x32\x03\x00\x01a", "truncated"),  # QoS 1 without packet id
        (b"\x36\x05\x00\x01a\x00\x01", "QoS 3"),
        (b"\x82\x05\x00\x01\x00\x01a", "requested QoS"),
        (b"\x80\x06\x00\x01\x00\x01a\x00", "flags"),  # SUBSCRIBE needs flags 2
        (b"\x30\x05\x00\x02\xff\xfeX", "UTF-8"),
        (b"\x30\xff\xff\xff\xff\x01", "longer than 4"),
        (b"\x30\x81\x80\x10", "exceeds"),  # 262145 > 256 KB
        (b"\x82\x06\x00\x01\x00\x02a#\x00", "'#'"),
        (b"\x30\x06\x00\x03a/+x", "topic"),
    ],
)
def test_violations_raise(raw, why):
    with pytest.raises(ProtocolError, match=why):
        Decoder().feed(raw)


def test_topic_matching():
    m = codec.topic_matches
    assert m("/a/+/c", "/a/b/c") and m("/a/#", "/a/b/c") and m("#", "/x")
    assert not m("/a/+", "/a/b/c") and not m("/a/b", "/a/c")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=8))
def test_fuzz_decoder_only_raises_protocol_error(chunks):
    d = Decoder(max_packet=4096)
    try:
        for c in chunks:
            for p in d.feed(c):
                assert p is not None
    except ProtocolError:
        pass


@settings(max_examples=200, deadline=None)
@given(
    topic=st.text(min_size=1, max_size=40).filter(
        lambda t: "+" not in t and "#" not in t and "\x00" not in t
    ),
    payload=st.binary(max_size=2000),
    qos=st.integers(0, 1),
    pid=st.integers(1, 65535),
)
def test_fuzz_publish_round_trip(topic, payload, qos, pid):
    (p,) = Decoder().feed(codec.encode_publish(topic, payload, qos, pid if qos else None))
    assert (p.topic, p.payload, p.qos) == (topic, payload, qos)
    assert p.packet_id == (pid if qos else None)

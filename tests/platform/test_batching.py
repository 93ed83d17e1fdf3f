# The platform's batched paths: the PUBLISH fast path of the codec, group commit with multi-row
# inserts, output written once per event-loop turn, slow consumers, the dropped device index.
import asyncio
import gc
import sqlite3

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from host_tools.platform import codec, registry
from host_tools.platform.codec import Decoder, ProtocolError
from host_tools.platform.testing import (
    Client,
    client_context,
    connwl_login,
    events,
    register,
    running_platform,
    wait_for,
)
from host_tools.platform.writer import Writer

DN = "esp32-0001"


def _outcome(fn):
    try:
        p = fn()
    except ProtocolError as e:
        return ("error", str(e))
    return ("ok", p.topic, p.payload, p.qos, p.retain, p.dup, p.packet_id)


@settings(max_examples=400, deadline=None)
@given(flags=st.integers(0, 15), body=st.binary(max_size=40))
def test_publish_fast_path_matches_the_generic_decoder(flags, body):
    """Decoder.feed decodes PUBLISH inline; it must accept, refuse and explain exactly as
    decode_body does for any flags and body."""
    raw = codec.packet(0x30 | flags, body)
    fast = _outcome(lambda: Decoder().feed(raw)[0])
    slow = _outcome(lambda: codec.decode_body(codec.PUBLISH, flags, body, 0, len(body)))
    assert fast == slow


@pytest.mark.parametrize("topic", ["/a/\x00", "", "/a/+", "/a/#"])
def test_publish_fast_path_refuses_bad_topics(topic):
    with pytest.raises(ProtocolError):
        Decoder().feed(codec.encode_publish(topic, b"x"))


@pytest.mark.parametrize("n", [1, 2, 3, 1029])
def test_writer_commits_a_turns_messages_in_order_then_answers(tmp_path, n):
    """n rows staged in one loop turn: one batch, chunked multi-row INSERTs (1029 = 1024 + 4 +
    1), every callback after the commit, in submission order."""
    loop = asyncio.new_event_loop()
    writer = Writer(tmp_path, loop, window_s=0)
    seen = []

    async def run():
        done = loop.create_future()
        for i in range(n):
            row = (1.0 + i, "pk", "dn", "cid", "/pk/dn/user/update", 1, b"%d" % i)
            writer.message(row, lambda r, i=i: seen.append((i, r)))
        writer.submit(registry.add_event, ("flush",), lambda r: done.set_result(r))
        await asyncio.wait_for(done, 10)

    try:
        loop.run_until_complete(run())
    finally:
        writer.stop()
        loop.close()
    assert seen == [(i, None) for i in range(n)]
    conn = sqlite3.connect(tmp_path / registry.DB_FILE)
    rows = conn.execute("SELECT time, payload FROM messages ORDER BY id").fetchall()
    conn.close()
    assert rows == [(1.0 + i, b"%d" % i) for i in range(n)]


def observer_and_device(plat):
    """A back-end observer subscribed to every device's user/update, and a registered device
    logged in with its token (both over TLS); returns (observer, device, the device's topic)."""
    pk, ps = plat.registry.add_product()
    reg = register(plat, pk, ps, DN)
    tls = client_context(plat.ca_path)
    obs = Client(plat.mqtts_port, tls)
    assert obs.connect("app-1", "observer", "obs") == 0
    assert obs.subscribe(f"/{pk}/+/user/update") == [1]
    dev = Client(plat.mqtts_port, tls)
    cid, user, pw = connwl_login(reg["clientId"], DN, pk, reg["deviceToken"])
    assert dev.connect(cid, user, pw) == 0
    return obs, dev, f"/{pk}/{DN}/user/update"


def test_pipelined_qos1_acked_in_order_and_routed_in_order(tmp_path):
    """300 QoS 1 PUBLISHes sent without waiting: every PUBACK comes, in order, after its
    message is stored, and the subscriber gets every message in order (output of one loop
    turn goes out in one write). Uplink limits off: this is 300 messages in one burst."""
    with running_platform(tmp_path / "p", observer_password="obs", uplink_qps=0) as plat:
        obs, dev, topic = observer_and_device(plat)
        raw = b"".join(codec.encode_publish(topic, b"%d" % i, 1, i + 1) for i in range(300))
        dev.send(raw)
        acks = [
            dev.recv(want=lambda p: getattr(p, "type", None) == codec.PUBACK) for _ in range(300)
        ]
        assert [a.packet_id for a in acks] == list(range(1, 301))
        got = [obs.message(topic).payload for _ in range(300)]
        assert got == [b"%d" % i for i in range(300)]
        stored = plat.registry.messages(device_name=DN)  # acknowledged => already committed
        assert [m["payload"] for m in stored] == got
        dev.ping()  # a direct write after queued ones keeps its place
        dev.disconnect()
        obs.disconnect()


def test_slow_consumer_is_cut_and_the_publisher_carries_on(tmp_path):
    """A subscriber that stops reading is closed once its unsent output passes the limit."""
    with running_platform(
        tmp_path / "p",
        observer_password="obs",
        slow_consumer_bytes=256 * 1024,
        uplink_qps=0,
        uplink_bytes_per_s=0,
    ) as plat:
        obs, dev, topic = observer_and_device(plat)
        big = b"x" * (200 * 1024)
        for _ in range(150):  # 30 MB the observer never reads: more than any socket buffers
            dev.publish(topic, big, qos=0)
            if any(e["cause"] == "slow_consumer" for e in events(plat, kind="disconnect")):
                break
        wait_for(
            lambda: any(e["cause"] == "slow_consumer" for e in events(plat, kind="disconnect"))
        )
        dev.publish(topic, b"still here", qos=1)  # the publisher's session is unharmed
        dev.disconnect()
        obs.close()


def test_old_state_loses_the_per_device_message_index_and_reads_still_filter(tmp_path):
    conn = sqlite3.connect(tmp_path / registry.DB_FILE)
    conn.executescript(registry.SCHEMA)
    conn.execute("CREATE INDEX messages_device ON messages (product_key, device_name)")
    conn.commit()
    conn.close()
    reg = registry.Registry(tmp_path)
    try:
        names = [r["name"] for r in reg._read("SELECT name FROM sqlite_master WHERE type='index'")]
        assert "messages_device" not in names
        writer_conn = registry.connect(tmp_path)
        for dn in ("a", "b", "a"):
            writer_conn.execute(
                "INSERT INTO messages (time, product_key, device_name, client_id, topic, qos,"
                " payload) VALUES (1, 'pk', ?, 'c', 't', 0, ?)",
                (dn, dn.encode()),
            )
        writer_conn.close()
        assert [m["payload"] for m in reg.messages(device_name="a", product_key="pk")] == [
            b"a",
            b"a",
        ]
    finally:
        reg.close()


def test_collector_frozen_under_many_connections_and_thawed_after(tmp_path):
    """With gc_freeze_connections=3: three open connections freeze the collector's objects
    (full collections then skip them); when they close, everything is collectable again."""
    gc.unfreeze()
    with running_platform(tmp_path / "p", gc_freeze_connections=3) as plat:
        # TLS: a connection joins the platform once its handshake is done (on the one-port
        # listener, once its first byte has told TLS from plain)
        tls = client_context(plat.ca_path)
        clients = [Client(plat.mqtts_port, tls) for _ in range(3)]
        try:
            wait_for(lambda: gc.get_freeze_count() > 0)
        finally:
            for c in clients:
                c.close()
        wait_for(lambda: gc.get_freeze_count() == 0)
        clients = [Client(plat.mqtt_port) for _ in range(2)]  # under the limit: not frozen
        try:
            c = clients[0]
            assert c.connect("x", "observer", "none") in (2, 4)  # the server still answers
            assert gc.get_freeze_count() == 0
        finally:
            for c in clients:
                c.close()

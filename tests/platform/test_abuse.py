# The platform under abuse (issue 13): backpressure on a flooding device, per-device uplink
# limits, wildcard will topics, the open-file limit. Real sockets, bounded in count and time.
import json
import os
import resource
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import pytest

from host_tools.platform import codec, registry
from host_tools.platform.testing import (
    Client,
    connwl_login,
    events,
    login,
    register,
    running_platform,
    wait_for,
)

ROOT = Path(__file__).resolve().parents[2]
MIB = 1024 * 1024


def _rss():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def _count(state, dn):
    conn = sqlite3.connect(Path(state) / registry.DB_FILE)
    try:
        return conn.execute(
            "SELECT count(*) FROM messages WHERE device_name = ?", (dn,)
        ).fetchone()[0]
    finally:
        conn.close()


def _p99(xs):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(0.99 * len(xs)))]


def _timed_publishes(dev, topic, n, first_id, until=None):
    """QoS 1 publishes one after the other; (acked ids, latencies). With `until`, goes on
    while until() is false (at least n)."""
    acked, lat = [], []
    i = first_id
    while len(acked) < n or (until is not None and not until()):
        t0 = time.perf_counter()
        dev.publish(topic, json.dumps({"id": i}), qos=1)  # returns at its PUBACK
        lat.append(time.perf_counter() - t0)
        acked.append(i)
        i += 1
        if len(acked) > 5000:
            break
    return acked, lat


@pytest.mark.parametrize("tls, n_chunks", [(False, 250), (True, 60)], ids=["tcp", "tls"])
def test_flood_is_read_only_as_fast_as_it_is_committed(tmp_path, tls, n_chunks):
    """A device floods 60 KB QoS 0 messages at line rate (uplink limits off, so only
    backpressure holds it) next to an honest QoS 1 device: the flooder's reads pause, the
    uncommitted backlog and the process's memory stay within their bounds, the honest device's
    PUBACKs keep coming, and nothing is lost (every acknowledged message, every flood message).
    Plain TCP: 2,000 messages (120 MB); TLS: 480 (29 MB; the client's encryption is slower)."""
    state = tmp_path / "p"
    conn_bound, bound = 1 * MIB, 8 * MIB
    settings = dict(
        uplink_qps=0,
        uplink_bytes_per_s=0,
        connection_backlog_bytes=conn_bound,
        backlog_bytes=bound,
    )
    with running_platform(state, linger_s=1, **settings) as plat:
        pk, ps = plat.registry.add_product()
        flood_reg = register(plat, pk, ps, "flood-1")
        honest_reg = register(plat, pk, ps, "honest-1")
        flooder = login(plat, flood_reg, tls=tls)
        honest = login(plat, honest_reg, tls=False)
        topic_h = f"/{pk}/honest-1/user/update"
        _, unloaded = _timed_publishes(honest, topic_h, 40, 0)
        acked = list(range(40))

        packet = codec.encode_publish(f"/{pk}/flood-1/user/update", b"x" * 60_000)
        chunk = packet * 8
        sent = [0]
        done = threading.Event()
        flooder.sock.settimeout(60)

        def flood():
            try:
                deadline = time.monotonic() + 60
                for _ in range(n_chunks):
                    if time.monotonic() > deadline:
                        break
                    flooder.sock.sendall(chunk)
                    sent[0] += 8
            finally:
                done.set()

        peak = [0]
        base = _rss()

        def sample():
            while not done.is_set():
                peak[0] = max(peak[0], _rss() - base)
                time.sleep(0.01)

        threads = [threading.Thread(target=f, daemon=True) for f in (flood, sample)]
        for t in threads:
            t.start()
        got, loaded = _timed_publishes(honest, topic_h, 20, 40, until=done.is_set)
        acked += got
        for t in threads:
            t.join(90)
        assert done.is_set()
        stats = plat.stats()
        flooder.disconnect()
        honest.disconnect()
        plat.flush()

        assert sent[0] == 8 * n_chunks
        wait_for(lambda: _count(state, "flood-1") == sent[0], timeout=60, step=0.2)
        stored = [
            json.loads(m["payload"])["id"] for m in plat.registry.messages(device_name="honest-1")
        ]
        assert sorted(stored) == acked  # nothing acknowledged is lost
        # The mechanism: the flooder's reads were paused, the backlog never passed its bound by
        # more than one read of one connection.
        assert stats["pauses"] > 0
        assert stats["peak_backlog_bytes"] <= conn_bound + MIB
        assert peak[0] <= bound + 56 * MIB, f"RSS grew {peak[0] / MIB:.0f} MiB"
        # The honest device was served all along (generous: relative to its own unloaded p99).
        assert len(loaded) >= 20
        assert _p99(loaded) <= max(50 * _p99(unloaded), 0.35), (_p99(unloaded), _p99(loaded))


def test_server_bound_pauses_every_connection(tmp_path):
    """Two flooders, each under its own (large) connection bound: the server's bound pauses
    every connection, the backlog stays within it plus one read per connection, and every
    flood message is stored once reading resumes."""
    state = tmp_path / "p"
    bound = 2 * MIB
    with running_platform(
        state,
        uplink_qps=0,
        uplink_bytes_per_s=0,
        connection_backlog_bytes=64 * MIB,
        backlog_bytes=bound,
    ) as plat:
        pk, ps = plat.registry.add_product()
        devs = [login(plat, register(plat, pk, ps, f"flood-{i}"), tls=False) for i in (1, 2)]
        chunks = [
            codec.encode_publish(f"/{pk}/flood-{i}/user/update", b"z" * 60_000) * 8 for i in (1, 2)
        ]

        def flood(dev, chunk):
            dev.sock.settimeout(60)
            for _ in range(40):  # 320 messages, 19 MB each
                dev.sock.sendall(chunk)

        threads = [
            threading.Thread(target=flood, args=a, daemon=True)
            for a in zip(devs, chunks, strict=True)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(90)
        assert not any(t.is_alive() for t in threads)
        for i in (1, 2):
            wait_for(lambda i=i: _count(state, f"flood-{i}") == 320, timeout=60, step=0.2)
        plat.flush()  # every commit answered
        stats = plat.stats()
        assert stats["pauses"] > 0 and stats["paused_now"] == 0
        assert stats["peak_backlog_bytes"] <= bound + 2 * MIB
        assert stats["backlog_bytes"] == 0
        for d in devs:
            d.ping()  # both read again
            d.disconnect()


def _burst(dev, topic, n, qos, payload=b"{}", first=1):
    raw = b"".join(
        codec.encode_publish(topic, payload, qos, first + i if qos else None) for i in range(n)
    )
    dev.send(raw)


def _pubacks_then_ping(plat, dev):
    """Every PUBACK the platform will send for what it got so far, in order: after flush() all
    commits are answered, and PINGRESP is written after whatever the session has queued."""
    plat.flush()
    dev.send(codec.PINGREQ_BYTES)
    acks = []
    while True:
        p = dev.recv(timeout=10)
        if getattr(p, "type", None) == codec.PINGRESP:
            return acks
        if getattr(p, "type", None) == codec.PUBACK:
            acks.append(p.packet_id)


def test_uplink_qps_past_30_a_second_is_dropped_unacknowledged_and_recorded(platform, product):
    """Aliyun's default: a device may publish 30 messages a second; the excess is dropped.
    A dropped QoS 1 message gets no PUBACK (the device still holds it); every PUBACK stands for
    a stored message; a throttle event is recorded; the connection stays, and next second the
    device may publish again."""
    pk, ps = product
    reg = register(platform, pk, ps, "dev-1")
    t0 = time.monotonic()
    dev = login(platform, reg)
    topic = f"/{pk}/dev-1/user/update"
    raw = b"".join(
        codec.encode_publish(topic, json.dumps({"id": i}).encode(), 1, i) for i in range(1, 61)
    )
    dev.send(raw)
    acks = _pubacks_then_ping(platform, dev)
    elapsed = time.monotonic() - t0
    assert 30 <= len(acks) <= 30 + 30 * elapsed + 1
    assert acks == list(range(1, len(acks) + 1))  # the first ones pass, the rest is dropped
    stored = [
        json.loads(m["payload"])["id"] for m in platform.registry.messages(device_name="dev-1")
    ]
    assert sorted(stored) == acks
    ev = events(platform, kind="throttle")
    assert ev and all(e["cause"] == "uplink_qps" and e["device_name"] == "dev-1" for e in ev)
    assert len(ev) <= 1 + elapsed  # at most one event a second, not one per message
    # Still connected; a second later the bucket has refilled.
    deadline = time.monotonic() + 10
    while True:
        try:
            dev.recv(timeout=0.5)  # nothing is due: let time pass without sleeping blindly
        except TimeoutError:
            pass
        pid = dev.publish(topic, json.dumps({"id": 1000}), qos=1, wait=False)
        try:
            dev.recv(timeout=2, want=lambda p, pid=pid: getattr(p, "packet_id", None) == pid)
            break
        except TimeoutError:
            assert time.monotonic() < deadline, "the device never got through again"
    dev.disconnect()


def test_uplink_bytes_per_second_limit(tmp_path):
    with running_platform(tmp_path / "p", uplink_qps=0, uplink_bytes_per_s=100_000) as plat:
        pk, ps = plat.registry.add_product()
        reg = register(plat, pk, ps, "dev-1")
        t0 = time.monotonic()
        dev = login(plat, reg)
        topic = f"/{pk}/dev-1/user/update"
        _burst(dev, topic, 10, 0, payload=b"y" * 30_000)
        _pubacks_then_ping(plat, dev)
        elapsed = time.monotonic() - t0
        n = len(plat.registry.messages(device_name="dev-1"))
        assert 3 <= n <= 3 + elapsed * 100_000 / 30_000 + 1  # 100 kB: three 30 kB messages
        ev = events(plat, kind="throttle")
        assert ev and ev[0]["cause"] == "uplink_bytes"
        dev.disconnect()


def test_observer_is_not_throttled(tmp_path):
    """The limits are per device: the application-side observer login is not one."""
    with running_platform(tmp_path / "p", observer_password="obs") as plat:
        obs = Client(plat.mqtt_port)
        assert obs.connect("app-1", "observer", "obs") == 0
        _burst(obs, "/any/topic", 100, 1)
        assert len(_pubacks_then_ping(plat, obs)) == 100
        obs.disconnect()


def test_registration_reads_on_once_answered(platform, product, tls):
    """While a registration is being written the connection is not read (what arrives waits in
    the socket, not in memory); once answered, the packets sent with the CONNECT are handled
    and reading resumes."""
    from host_tools.platform.testing import regnwl_login

    pk, ps = product
    cid, user, pw = regnwl_login("dev-9", pk, ps)
    c = Client(platform.mqtts_port, tls)
    c.send(
        codec.encode_connect(cid, user, pw.encode(), 60)
        + codec.encode_subscribe(1, [("/ext/regnwl", 0)])
    )
    assert c.recv(want=lambda p: getattr(p, "type", None) == codec.CONNACK).rc == 0
    assert c.recv(want=lambda p: getattr(p, "type", None) == codec.SUBACK).items == [0]
    assert json.loads(c.message("/ext/regnwl").payload)["deviceName"] == "dev-9"
    c.ping()  # read after the answer
    c.disconnect()


def test_will_topic_with_wildcard_or_empty_is_refused_like_mosquitto(platform, product):
    """MQTT 3.1.1 forbids wildcards in topic names, so in a will topic; mosquitto closes such
    a CONNECT without a CONNACK. So does the platform, recording a protocol error; a plain will
    topic on the same credentials is accepted."""
    pk, ps = product
    reg = register(platform, pk, ps, "dev-1")
    cid, user, pw = connwl_login(reg["clientId"], "dev-1", pk, reg["deviceToken"])
    for topic in (f"/sys/{pk}/dev-1/#", f"/sys/{pk}/+/thing/event", ""):
        c = Client(platform.mqtt_port)
        c.send(codec.encode_connect(cid, user, pw.encode(), 60, will=(topic, b"gone", 1, False)))
        assert c.closed_by_server()
        assert not [p for p in c.inbox if getattr(p, "type", None) == codec.CONNACK]
        c.close()
    errs = events(platform, kind="protocol_error")
    assert len([e for e in errs if "will topic" in (e["detail"] or "")]) == 3
    ok = Client(platform.mqtt_port)
    assert ok.connect(cid, user, pw, will=(f"/sys/{pk}/dev-1/will", b"gone", 1, False)) == 0
    ok.disconnect()


def test_serve_raises_the_open_file_limit_and_reports_what_is_left(tmp_path):
    """Started with a soft limit of 256 descriptors, `platform serve` raises it to the hard
    limit, says so on its ready line, and 400 idle sockets do not lock a login out."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    low = 256
    assert hard > 2 * low, "this test needs a hard open-file limit above 512"
    state = tmp_path / "p"
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    serve = [sys.executable, "-m", "host_tools.cli", "platform", "serve", "--state", str(state)]
    serve += ["--port", "0", "--tls-port", "0", "--linger", "1"]
    proc = subprocess.Popen(  # the shell lowers its soft limit; the server inherits it
        ["sh", "-c", f'ulimit -Sn {low} && exec "$@"', "sh", *serve],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
        env=env,
    )
    idle = []
    try:
        lines = []
        reader = threading.Thread(target=lambda: lines.append(proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(60)
        assert lines and lines[0], "serve did not print its ready line"
        ready = json.loads(lines[0])
        limits = Path(f"/proc/{proc.pid}/limits").read_text()
        row = next(r for r in limits.splitlines() if r.startswith("Max open files"))
        assert int(row.split()[3]) == hard  # the soft limit now
        assert ready["open_files_limit"] == hard
        assert low < ready["open_files_left"] < hard
        plat = types.SimpleNamespace(
            mqtt_port=ready["mqtt"], mqtts_port=ready["mqtts"], ca_path=ready["ca"]
        )
        reg_db = registry.Registry(state)
        try:
            pk, ps = reg_db.add_product()
        finally:
            reg_db.close()
        for _ in range(400):  # more connections than the old soft limit allowed
            idle.append(socket.create_connection(("127.0.0.1", ready["mqtt"]), timeout=5))
        reg = register(plat, pk, ps, "dev-1")
        login(plat, reg).disconnect()
    finally:
        for s in idle:
            s.close()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

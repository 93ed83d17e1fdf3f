# The bench's statistics and codec helpers on known inputs (no timing asserted).
import pytest

from host_tools.load import bench_common, bench_report
from host_tools.load import loadgen as lg


def test_percentile_interpolates_like_numpy():
    values = [5, 1, 4, 2, 3]  # sorted: 1 2 3 4 5
    assert lg.percentile(values, 0) == 1
    assert lg.percentile(values, 50) == 3
    assert lg.percentile(values, 100) == 5
    assert lg.percentile(values, 25) == 2
    assert lg.percentile([10, 20], 99) == pytest.approx(19.9)
    assert lg.percentile([7], 99) == 7
    assert lg.percentile([], 50) is None


def test_summarize_reports_count_percentiles_and_max():
    s = lg.summarize(list(range(1, 101)))
    assert s == {"n": 100, "p50": 50.5, "p95": 95.05, "p99": 99.01, "max": 100.0}
    assert lg.summarize([]) == {"n": 0, "p50": None, "p95": None, "p99": None, "max": None}


def test_message_loss_counts_lost_and_duplicates():
    sent = [("a", 1), ("a", 2), ("b", 1), ("b", 2)]
    stored = [("a", 1), ("a", 2), ("a", 2), ("b", 2), ("c", 9)]
    r = lg.message_loss(sent, stored)
    assert r["sent"] == 4
    assert r["stored"] == 5
    assert r["lost"] == 1
    assert r["lost_keys"] == [("b", 1)]
    assert r["duplicates"] == 1
    assert lg.message_loss(sent, sent)["lost"] == 0
    # a key acknowledged twice (counter restarted after a power cut) must be stored twice
    twice = lg.message_loss([("a", 1), ("a", 1)], [("a", 1)])
    assert (twice["lost"], twice["lost_keys"]) == (1, [("a", 1)])
    assert lg.message_loss([("a", 1), ("a", 1)], [("a", 1)] * 3)["duplicates"] == 1


@pytest.mark.parametrize(
    "method,expected",
    [
        ("hmacsha1", "0cfe034cd1b0334c03a782a9fd2bef8e04213e02"),
        ("hmacsha256", "c364f6cd007bdf6360820ee149ed5a620c1e259691371f68fde817078a9e4696"),
        ("hmacmd5", "d53ca0bf0ed0af11bb5ecfc82d51c3e2"),
    ],
)
def test_sign_matches_protocol_vectors(method, expected):
    got = lg.sign("0123456789abcdef", "esp32-0001", "a1B2C3D4E5F", "1234567890", method)
    assert got == expected


def test_sign_matches_the_article_example():
    got = lg.sign("h1nQFYPZS0mW2352", "device1", "al123456789", "123", "hmacsha1")
    assert got == "d6146f9ad1209149bfaf56341f267283e3e2b4ad"
    with pytest.raises(ValueError, match="signmethod"):
        lg.sign("s", "d", "p", "r", "sha1")


def test_regnwl_connect_packet_fields():
    cid, user, pw = lg.regnwl_connect(
        "a1B2C3D4E5F", "0123456789abcdef", "esp32-0001", "hmacsha1", random="1234567890"
    )
    assert cid == "esp32-0001|securemode=-2,authType=regnwl,random=1234567890,signmethod=hmacsha1|"
    assert user == "esp32-0001&a1B2C3D4E5F"
    assert pw == "0cfe034cd1b0334c03a782a9fd2bef8e04213e02"
    pkt = lg.connect_packet(cid, user, pw, keepalive=60)
    assert pkt[0] == 0x10
    # remaining length is the rest of the packet (two length bytes here: > 127)
    assert pkt[1] & 0x80 and (pkt[1] & 0x7F) + (pkt[2] << 7) == len(pkt) - 3
    assert pkt[3:13] == b"\x00\x04MQTT\x04\xc2\x00\x3c"


def test_client_parses_split_and_coalesced_packets():
    got = []
    c = lg.MqttClient(on_message=lambda t, p, now: got.append((t, p)))

    class T:
        def write(self, data):
            pass

        def is_closing(self):
            return False

    c.transport = T()
    stream = lg.publish_packet("a/b", b"x" * 200, 1, 7) + b"\x40\x02\x00\x01" * 3
    stream += lg.publish_packet("c", b"yz", 0)
    for i in range(0, len(stream), 5):  # byte dribble across packet boundaries
        c.data_received(stream[i : i + 5])
    assert got == [("a/b", b"x" * 200), ("c", b"yz")]
    assert c.acked == 3
    assert c.bytes_in == len(stream)
    assert c.bytes_out == 4  # the PUBACK for the QoS 1 publish


def test_targets_and_ratios_from_figures():
    flat = {
        "platform.qos1_per_s": 30000.0,
        "mosquitto.qos1_per_s": 50000.0,
        "device.mpy_kib": 30.0,
        "platform.latency_4000_p99_ms": 5.0,
    }
    r = bench_report.ratios(flat)
    assert r["qos1_throughput_vs_mosquitto"] == 0.6
    by_key = {
        t["key"]: t["status"]
        for t in bench_report.check_targets(
            {**flat, **{"ratios.qos1_throughput_vs_mosquitto": r["qos1_throughput_vs_mosquitto"]}}
        )
    }
    assert by_key["ratios.qos1_throughput_vs_mosquitto"] == "pass"
    assert by_key["device.mpy_kib"] == "miss"
    assert by_key["platform.latency_4000_p99_ms"] == "pass"
    assert by_key["device.min_heap_kib"] == "n/a"


def test_mosquitto_missing_without_root_is_reported_not_fatal(monkeypatch, tmp_path):
    from host_tools import sysdeps

    monkeypatch.setattr(sysdeps, "MOSQUITTO_PATHS", ())
    monkeypatch.setenv("PATH", str(tmp_path))  # no mosquitto, no apt-get on it
    assert sysdeps.ensure_mosquitto(log=lambda m: None) == (
        None,
        "mosquitto is not installed and there is no apt-get to install it",
    )
    (tmp_path / "apt-get").write_text("#!/bin/sh\nexit 1\n")
    (tmp_path / "apt-get").chmod(0o755)
    monkeypatch.setattr(sysdeps.os, "geteuid", lambda: 1000)
    path, reason = sysdeps.ensure_mosquitto(log=lambda m: None)
    assert path is None and "needs root" in reason
    flat = bench_report.flatten({"mosquitto": bench_common.unavailable(reason)})
    assert "mosquitto.qos1_per_s" not in flat

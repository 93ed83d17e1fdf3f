# The app end to end with fake board parts and virtual time, real TLS to the test broker, on both
# runtimes: registration, token reuse, refusals, revocation, outages, dead links, duty cycle.
import json

import pytest

from tests.firmware.conftest import PK, SECRET, scenario_result

DN = "240ac4123456"


@pytest.fixture
def board(run, certs, broker):
    (run.cwd / "ca.pem").write_bytes((certs / "ca.pem").read_bytes())

    def boot(
        limit_s, io_ms=1500, reply_ms=1500, oom=False, wrap=None, heap=None, trace=False, **cfg
    ):
        c = {
            "product_key": PK,
            "product_secret": SECRET,
            "host": "localhost",
            "port": broker.port,
            "wifi_ssid": "lab",
            "interval_s": 1,
            "keepalive_s": 60,
        }
        c.update(cfg)
        params = {"cfg": c, "limit_ms": int(limit_s * 1000), "io_ms": io_ms, "reply_ms": reply_ms}
        params["oom"] = oom
        params["harness_extras"] = {
            "wrap": wrap,
            "trace": trace,
            "oom": oom,
            "limit_ms": int(limit_s * 1000),
        }
        (run.cwd / "scenario.json").write_text(json.dumps(params))
        out = run.call("fw_scenarios", "boot", heap=heap, timeout=600)
        for secret in [SECRET] + [tok for _, tok in broker.tokens.values()]:
            assert secret not in out, "a secret reached the console"
        lines = out.splitlines()
        result = scenario_result(lines[-1])
        return lines[:-1], result

    return boot


def ids(broker):
    return [json.loads(p)["id"] for t, p in broker.published if t.endswith("/user/update")]


def events(broker, kind):
    return [e for e in broker.events if e[0] == kind]


def test_first_boot_registers_then_reboot_reuses_the_token(board, broker):
    log, r = board(5.5)
    assert f"[reg] registered as {DN} (clientId cid0000" in "\n".join(log)
    assert f"[mqtt] online as {DN}" in log
    assert r["has_token"] and r["regs"] == 1
    sent = ids(broker)
    assert len(sent) >= 3 and sent == list(range(1, len(sent) + 1))
    for n in sent:
        assert f"[tel] acked #{n}" in log
    # the registration session was closed (DISCONNECT) before the connwl session opened
    assert events(broker, "connwl")[0][4] == 0
    assert broker.wait(lambda: events(broker, "reg-closed"))
    assert events(broker, "reg-closed")[0][1] == 0xE0
    # the platform's NTP answer (5 s ahead) refined the clock
    assert any(line.startswith("[net] time refined by MQTT NTP (+") for line in log)

    log, r = board(3.5)
    assert any(line.startswith(f"[cred] token loaded for {DN}") for line in log)
    assert len(events(broker, "regnwl")) == 1  # no second registration
    assert r["regs"] == 1 and f"[mqtt] online as {DN}" in log


def test_wrong_product_secret_backs_off_long_and_growing(board, broker):
    log, r = board(720, product_secret="wrong-secret-123", reg_backoff_s=60, interval_s=60)
    attempts = events(broker, "regnwl")
    assert all(e[2] == 4 for e in attempts)
    # 12 min of virtual time, waits of 1 to 2 min, doubling: 3 or 4 attempts, not hundreds
    assert 3 <= len(attempts) <= 4, len(attempts)
    waits = [s for s in r["sleeps"] if s >= 60000]
    assert len(waits) == len(attempts)  # a long wait after every attempt (the last one cut)
    assert waits == sorted(waits)
    assert not r["has_token"] and r["regs"] == 0


def test_revoked_token_leads_to_exactly_one_reregistration(board, broker):
    board(2.5)
    broker.tokens.clear()  # the operator clears the device's clientIds
    log, r = board(12, max_connwl_refusals=3)
    refused = [e for e in events(broker, "connwl") if e[2] == 4]
    assert len(refused) == 3
    assert len(events(broker, "regnwl")) == 2
    assert r["regs"] == 2 and r["has_token"]
    assert "[cred] W: token revoked: wiping it and registering again" in log
    assert log.count(f"[mqtt] online as {DN}") == 1


@pytest.mark.parametrize(
    "reply",
    [
        b"not json",
        b'{"productKey":"a1B2C3D4E5F","deviceName":"240ac4123456","clientId":"c"}',
        b'{"productKey":"a1B2C3D4E5F","deviceName":"someoneelse","clientId":"c","deviceToken":"t"}',
        b'{"productKey":"a1B2C3D4E5F","deviceName":"240ac4123456","clientId":"c","deviceToken":"'
        + b"t" * 6000
        + b'"}',
    ],
    ids=["not-json", "missing-token", "wrong-device", "huge"],
)
def test_malformed_registration_reply_persists_nothing(board, broker, reply):
    broker.reply = reply
    log, r = board(30)
    assert len(events(broker, "regnwl")) == 1  # then the long back-off, no hammering
    assert not r["has_token"] and r["regs"] == 0
    assert any("[reg] W:" in line for line in log)


def test_withheld_registration_reply_is_bounded_and_backs_off(board, broker):
    broker.reply = False  # CONNACK 0, then nothing
    log, r = board(30, reply_ms=500)
    assert len(events(broker, "regnwl")) == 1
    assert any(line.startswith("[reg] W: no usable /ext/regnwl reply") for line in log)
    assert not r["has_token"] and r["regs"] == 0


def test_outage_buffers_samples_and_delivers_them_in_order(board, broker):
    board(1.5)
    first = ids(broker)
    broker.published.clear()
    broker.down = 4  # the next 4 TCP connections are cut: 15 to 30 s of back-off
    log, r = board(36, buffer_max=200)
    assert len(events(broker, "down")) == 4
    sent = ids(broker)
    # RTC memory kept the first boot's queue and counter: ids go on, in order, with no gaps
    assert sent[0] == max(first) + 1 and sent == list(range(sent[0], sent[0] + len(sent))), sent
    assert len(sent) > 10  # samples taken while offline, all delivered after reconnecting
    stamps = [json.loads(p)["ts"] for t, p in broker.published if t.endswith("/user/update")]
    # each keeps the timestamp it was taken with (sent in a burst, yet all distinct)
    assert len(set(stamps)) == len(stamps)
    assert first


def test_full_buffer_drops_oldest_and_reports_the_count(board, broker):
    board(1.5)
    first = max(ids(broker))
    broker.published.clear()
    broker.down = 4
    log, r = board(36, buffer_max=4)
    sent = ids(broker)
    assert sent == sorted(sent) and sent[0] > first + 1  # the oldest went
    missing = set(range(first + 1, sent[-1] + 1)) - set(sent)
    last = json.loads([p for t, p in broker.published if t.endswith("/user/update")][-1])
    assert last["dropped"] == len(missing) > 0  # every loss is accounted for, none hidden


def test_dead_link_is_detected_and_nothing_is_lost(board, broker):
    board(1.5)
    first = max(ids(broker))
    broker.published.clear()
    broker.mute_after = 2  # each session: 2 PUBACKs, then silence
    log, r = board(4, io_ms=400)
    assert any("OSError" in line for line in log)
    assert len(events(broker, "muted")) >= 2
    sent = ids(broker)
    assert sent == list(range(first + 1, first + 1 + len(sent))), sent


def test_duty_cycle_keeps_samples_in_rtc_across_deep_sleep(board, broker):
    log, r = board(60, mode="duty_cycle", interval_s=300)
    assert r["stop"] == "deepsleep 300000" and r["slept"] == 300000
    assert ids(broker) == [1]
    broker.down = 1  # next wake: platform unreachable (one try a wake), the sample waits in RTC
    log, r = board(600, mode="duty_cycle", interval_s=300)
    assert r["stop"].startswith("deepsleep") and ids(broker) == [1]
    assert len(events(broker, "down")) == 1
    log, r = board(60, mode="duty_cycle", interval_s=300)
    assert any("samples restored from RTC memory" in line for line in log)
    assert ids(broker) == [1, 2, 3]


def test_safe_mode_file_skips_the_application(run):
    (run.cwd / "safemode").write_text("")
    (run.cwd / "config.json").write_text("{}")
    out = run.call("fw_main", "main_once")
    assert out.splitlines() == [
        "[boot] safe mode (file 'safemode'): application not started",
        "RETURNED",
    ]


@pytest.mark.parametrize(
    "text, message",
    [
        (None, "config.json not found"),
        ("{oops", "config.json is not valid JSON"),
        ('{"product_key": "a1B2C3D4E5F"}', "product_secret is required"),
    ],
)
def test_bad_config_is_reported_and_nothing_starts(run, text, message):
    if text is not None:
        (run.cwd / "config.json").write_text(text)
    out = run.call("fw_main", "main_once")
    lines = out.splitlines()
    assert lines[-1] == "RETURNED" and len(lines) == 2, out
    assert lines[0].startswith("[cfg] E: " + message) and lines[0].endswith("; not starting")


@pytest.mark.parametrize("oom", [True, "tls"], ids=["MemoryError", "mbedtls-ENOMEM"])
def test_out_of_memory_three_times_in_a_row_resets_the_board_keeping_samples(board, broker, oom):
    """MemoryError from the VM, and OSError(ENOMEM) from a TLS allocation failure alike."""
    log, r = board(120, oom=oom)
    errors = [
        line for line in log if line.startswith(("[app] E: MemoryError", "[app] E: OSError"))
    ]
    assert [e.split(", ")[-1] for e in errors] == [
        "1 of 3 in a row",
        "2 of 3 in a row",
        "3 of 3 in a row",
    ]
    assert "[app] E: out of memory: resetting" in log and r["stop"] == "reset"
    assert not events(broker, "regnwl")  # nothing reached the platform
    assert len(r["sleeps"]) == 2  # backed off between the attempts, as for a network error
    # what was sampled meanwhile survives the reset in RTC memory, and the next boot sends it
    queued = r["queued"]
    assert queued
    log, r = board(10)
    assert any("samples restored from RTC memory" in line for line in log)
    assert set(queued) <= set(ids(broker))


@pytest.mark.parametrize(
    "knob",
    [{"reply_qos": 2}, {"reg_before": b"\xd0\x02\x00\x00"}],
    ids=["reply-at-qos2", "pingresp-with-a-body"],
)
def test_bad_exchange_after_connack_backs_off_long(board, broker, knob):
    """umqtt.simple raises AssertionError at either; after CONNACK 0 that is the registration's
    failure (long reg_backoff_s), never a network one (seconds: 5 slots gone in 20 s)."""
    for k, v in knob.items():
        setattr(broker, k, v)
    log, r = board(55, reg_backoff_s=60, interval_s=60)  # waits 60 to 120 s after a failure
    assert len(events(broker, "regnwl")) == 1, log
    assert any(line.startswith("[reg] W: no usable /ext/regnwl reply") for line in log), log
    assert r["sleeps"] and min(r["sleeps"]) >= 60000, r["sleeps"]
    assert not r["has_token"] and r["regs"] == 0


# The VM only (the board's runtime, where umqtt's struct.pack_into silently truncates id
# 65,536 to 0): 65,540 real publishes take ~1.5 min there; the wrap itself is checked on both
# runtimes by test_transport.py's test_packet_ids_wrap_and_every_publish_is_acknowledged.
@pytest.mark.parametrize("runtime", ["micropython"], indirect=True)
def test_long_run_crosses_the_ticks_window_and_the_packet_id_wrap(board, broker):
    """A sample every 9 s for 6.8 days of virtual time on a 32-bit port's ticks (they wrap a
    minute after boot; ticks_diff answers within 2**29 ms = 6.2 days), in one session: the
    65,536th QoS 1 packet goes out as packet id 1, uptime_s keeps counting."""
    n = 65540
    log, r = board(
        n * 9, interval_s=9, keepalive_s=1200, buffer_max=8, wrap=[60000, 90], heap="96K"
    )
    assert r["stop"] == "virtual time limit"
    assert len(events(broker, "connwl")) == 1  # never a reconnect
    sent = [json.loads(p) for t, p in broker.published if t.endswith("/user/update")]
    assert len(sent) >= 65536 and [d["id"] for d in sent] == list(range(1, len(sent) + 1))
    topics = [t for t, _ in broker.published]
    pids = [p for t, p in zip(topics, broker.pids, strict=True) if t.endswith("/user/update")]
    i = pids.index(65535)  # the SUBACKs took ids 1 and 2: publishes started at 3
    assert 0 not in pids and pids[i : i + 3] == [65535, 1, 2], pids[i - 2 : i + 5]
    up = [d["uptime_s"] for d in sent]
    assert up == sorted(up) and up[-1] > (1 << 29) // 1000  # past 6.2 days, still right
    assert abs(up[-1] - r["now"] // 1000) <= 30


def test_tls_context_is_made_with_the_radio_on(board, broker):
    """mbedTLS seeds its CTR-DRBG when the context is made; ESP-IDF's RNG is only truly random
    once the RF subsystem is on: Wi-Fi active first, the context after, still at boot."""
    log, r = board(3, trace=True)
    assert r["trace"][:2] == ["radio switched on", "tls context made"], r["trace"]
    assert f"[mqtt] online as {DN}" in log

# The network seam on both runtimes: verified TLS, deadlines, umqtt.simple through our transport.
import errno
import socket
import threading

import pytest

from tests.firmware.conftest import PK


@pytest.fixture
def flash(run, certs):
    for name in ("ca.pem", "other-ca.pem"):
        (run.cwd / name).write_bytes((certs / name).read_bytes())
    return run


def test_session_through_umqtt(flash, broker, umqtt_version):
    broker.tokens[(PK, "240ac4123456")] = ("cid1", "tok1")
    broker.downlink = b'{"cmd":"blink"}'
    out = flash.call(
        "fw_seam", "session", "localhost", broker.port, "ca.pem", 3000, "cid1", "tok1"
    )
    assert 'TALK /a1B2C3D4E5F/240ac4123456/user/get {"cmd":"blink"} None None' in out, out
    assert [p for _, p in broker.published] == [b'{"n":0}', b'{"n":1}', b'{"n":2}']
    assert broker.wait(lambda: broker.count("disconnect") == 1) and broker.count("ping") == 1


def test_unknown_ca_is_refused(flash, broker):
    out = flash.call("fw_seam", "connect_only", "localhost", broker.port, "other-ca.pem", 3000)
    assert out.startswith("ERR"), out
    assert broker.count("connwl") == 0  # no CONNECT ever reached the server


def test_wrong_host_name_is_refused(flash, broker):
    # the certificate names localhost only
    out = flash.call("fw_seam", "connect_only", "127.0.0.1", broker.port, "ca.pem", 3000)
    assert out.startswith("ERR"), out
    assert broker.count("connwl") == 0


def test_silent_server_times_out_at_the_deadline(flash, broker):
    broker.silent = True  # TLS completes, CONNACK never comes
    out = flash.call("fw_seam", "connect_only", "localhost", broker.port, "ca.pem", 800)
    kind, name, elapsed, feeds, code = out.strip().split(maxsplit=4)
    # the errno module's value (Linux's here, newlib's 116 on ESP32), never a number in code
    assert (kind, name, code) == ("ERR", "OSError", str(errno.ETIMEDOUT)), out
    assert 700 <= int(elapsed) < 10000
    assert int(feeds) >= 2  # the watchdog is fed while waiting (500 ms slices)


def test_silent_tcp_times_out_in_the_handshake(flash):
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(1)
    held = []
    t = threading.Thread(target=lambda: held.append(ls.accept()), daemon=True)
    t.start()
    try:
        out = flash.call(
            "fw_seam", "connect_only", "localhost", ls.getsockname()[1], "ca.pem", 800
        )
    finally:
        t.join(5)
        for conn, _ in held:
            conn.close()
        ls.close()
    kind, name, elapsed = out.strip().split(maxsplit=3)[:3]
    assert (kind, name) == ("ERR", "OSError"), out
    assert 700 <= int(elapsed) < 10000


def test_oversized_packet_is_refused_not_allocated(flash, broker, umqtt_version):
    broker.tokens[(PK, "240ac4123456")] = ("cid1", "tok1")
    broker.downlink = b"x" * 20000
    out = flash.call(
        "fw_seam", "big_packet", "localhost", broker.port, "ca.pem", 3000, "cid1", "tok1"
    )
    assert f"ERR OSError {errno.ENOBUFS}" in out and "GOT" not in out, out


def test_umqtt_has_what_the_subclass_relies_on(run, umqtt_version):
    """Our Client uses only these names of umqtt.simple (1.3.4 and micropython-lib 1.4+)."""
    out = run.call("fw_umqtt_contract", "check")
    assert out.strip() == "OK", out


def test_packet_ids_wrap_and_every_publish_is_acknowledged(flash, broker):
    broker.tokens[(PK, "240ac4123456")] = ("cid1", "tok1")
    out = flash.call(
        "fw_seam", "wrap", "localhost", broker.port, "ca.pem", 3000, "cid1", "tok1", 65533
    )
    assert out.split() == ["ACKED", "65534", "ACKED", "65535", "ACKED", "1", "ACKED", "2"], out
    assert broker.pids == [65534, 65535, 1, 2]  # never 0, never 65,536 truncated

# The TLS the emulator presents (docs/platform-tls.md): an RSA chain with an intermediate, the
# suites Aliyun's clients need (the C SDK's offer included), nothing weaker, one port for TLS and
# plain TCP, and a handshake deadline.
import datetime
import json
import os
import select
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from host_tools.paths import ROOT
from host_tools.platform import tls
from host_tools.platform.testing import (
    Client,
    client_context,
    events,
    login,
    register,
    regnwl_login,
    running_platform,
)
from tests.platform import csdk_tls

HOST = "{pk}.iot-as-mqtt.cn-shanghai.aliyuncs.com"
STATIC_RSA = {0x003D, 0x0035, 0x003C, 0x002F}
SCSV = 0x00FF  # TLS_EMPTY_RENEGOTIATION_INFO_SCSV: not a suite
RSA_PKCS1 = {0x0601, 0x0501, 0x0401, 0x0301}  # rsa_pkcs1 with SHA-512/384/256/224


def _client_hello(data):
    """(suites, signature algorithms, supported_versions) of one ClientHello record."""
    assert data[0] == 0x16 and data[5] == 1, "not a ClientHello"
    body = data[9:]
    i = 2 + 32
    i += 1 + body[i]  # session id
    (n,) = struct.unpack_from("!H", body, i)
    suites = set(struct.unpack_from(f"!{n // 2}H", body, i + 2))
    i += 2 + n
    i += 1 + body[i]  # compression methods
    (end,) = struct.unpack_from("!H", body, i)
    i += 2
    end += i
    sigalgs, versions = set(), set()
    while i < end:
        kind, n = struct.unpack_from("!HH", body, i)
        ext = body[i + 4 : i + 4 + n]
        if kind == 13:
            sigalgs = set(struct.unpack_from(f"!{len(ext) // 2 - 1}H", ext, 2))
        elif kind == 43:
            versions = set(struct.unpack_from(f"!{ext[0] // 2}H", ext, 1))
        i += 4 + n
    return suites, sigalgs, versions


def _run_csdk(tmp_path, *args):
    conf = tmp_path / "csdk-openssl.cnf"
    conf.write_text(csdk_tls.SIGALGS_CONF)
    env = dict(os.environ, OPENSSL_CONF=str(conf), PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, str(Path(csdk_tls.__file__)), *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


def test_c_sdk_offer_registers_logs_in_and_publishes(platform, product, tmp_path):
    """The C SDK's exact offer (checked on the wire first) completes the handshake against the
    RSA chain, then regnwl, connwl and a QoS 1 publish, on both MQTT ports."""
    rec = socket.create_server(("127.0.0.1", 0))
    got = []

    def record():
        conn, _ = rec.accept()
        with conn:
            conn.settimeout(10)
            data = b""
            while len(data) < 5 or len(data) < 5 + struct.unpack_from("!H", data, 3)[0]:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
            got.append(data)

    t = threading.Thread(target=record)
    t.start()
    _run_csdk(tmp_path, "hello", rec.getsockname()[1])
    t.join(30)
    rec.close()
    suites, sigalgs, versions = _client_hello(got[0])
    assert suites - {SCSV} == STATIC_RSA
    assert sigalgs and sigalgs <= RSA_PKCS1
    assert versions <= {0x0303}  # TLS 1.2 only (no supported_versions extension at all)

    pk, ps = product
    for i, port in enumerate((platform.mqtts_port, platform.mqtt_port)):
        dn = f"c0ffee00000{i}"
        r = _run_csdk(tmp_path, "cycle", port, platform.ca_path, HOST.format(pk=pk), pk, ps, dn)
        assert r.returncode == 0, r.stdout + r.stderr
        out = json.loads(r.stdout)
        assert out["version"] == "TLSv1.2" and out["cipher"] in csdk_tls.SUITES.split(":")
        msgs = platform.registry.messages(device_name=dn)
        assert [json.loads(m["payload"]) for m in msgs] == [{"t": 21.5}]


def _refused(port, ctx):
    """The server ends the handshake (an alert or a close), not the client."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with pytest.raises((ssl.SSLError, ConnectionError)) as e:
            ctx.wrap_socket(raw, server_hostname="localhost")
    # (a client-side failure, such as no protocol or suite it could offer, reads otherwise)
    closed = isinstance(e.value, (ssl.SSLEOFError, ConnectionError))
    assert closed or "ALERT" in str(e.value).upper(), e.value


@pytest.mark.parametrize(
    "offer",
    [
        ("TLSv1", "DEFAULT:@SECLEVEL=0"),  # TLS 1.0 only
        ("TLSv1_2", "NULL-SHA256:NULL-SHA:NULL-MD5:@SECLEVEL=0"),  # NULL ciphers
        ("TLSv1_2", "aNULL:@SECLEVEL=0"),  # anonymous (no certificate at all)
    ],
)
def test_weak_offers_are_refused(platform, product, offer):
    version, ciphers = offer
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    try:
        with warnings.catch_warnings():  # TLSv1 is deprecated: that is the point
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.minimum_version = ctx.maximum_version = getattr(ssl.TLSVersion, version)
        ctx.set_ciphers(ciphers)
    except ssl.SSLError:
        pytest.fail(f"this OpenSSL cannot even offer {offer}: the test proves nothing")
    for port in (platform.mqtts_port, platform.mqtt_port, platform.https_port):
        _refused(port, ctx)
    assert platform.connections() == []
    assert not [e for e in events(platform) if e["kind"] == "login"]


def test_chain_is_rsa_root_intermediate_leaf(platform, product):
    """ca.pem is the RSA root alone; the server sends leaf + intermediate (a client trusting only
    the root verifies it); the leaf covers every host name, iot-auth included."""
    roots = x509.load_pem_x509_certificates(Path(platform.ca_path).read_bytes())
    assert len(roots) == 1 and roots[0].issuer == roots[0].subject
    assert isinstance(roots[0].public_key(), rsa.RSAPublicKey)
    assert roots[0].public_key().key_size == 2048
    ctx = client_context(platform.ca_path)
    pk = product[0]
    for host in (HOST.format(pk=pk), "iot-auth.cn-shanghai.aliyuncs.com", "localhost"):
        for port in (platform.mqtts_port, platform.mqtt_port, platform.https_port):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
                with ctx.wrap_socket(raw, server_hostname=host) as s:
                    leaf = x509.load_der_x509_certificate(s.getpeercert(binary_form=True))
                    assert s.version() == "TLSv1.2"
                    assert s.cipher()[0].startswith("ECDHE-RSA-AES")  # Python's own pick
    assert isinstance(leaf.public_key(), rsa.RSAPublicKey)
    assert leaf.issuer != roots[0].subject  # issued by the intermediate, not the root


def test_tls13_is_a_setting(tmp_path):
    with running_platform(tmp_path / "p", tls_max_version="1.3") as plat:
        ctx = client_context(plat.ca_path)
        with Client(plat.mqtts_port, ctx) as c:
            assert c.sock.version() == "TLSv1.3"
    with pytest.raises(ValueError, match="tls_max_version"):
        tls.server_context(tmp_path / "q", max_version="1.1")


def _old_state(d):
    """A state folder as zeroburn made it before the RSA switch: ECDSA root, one-level chain."""
    d.mkdir(parents=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "zeroburn test root CA")])
    now = datetime.datetime.now(datetime.UTC)
    ca = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    (d / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (d / "ca.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return (d / "ca.pem").read_bytes()


def test_old_ecdsa_state_keeps_working(tmp_path):
    """An old state folder: its ECDSA root moves to ecdsa/ca.pem (boards flashed with it work
    with tls_chain="ecdsa"); ca.pem becomes the new RSA root (what re-flashed boards get); the
    products and tokens in it keep working."""
    state = tmp_path / "old"
    old_ca = _old_state(state)
    with running_platform(state, linger_s=1) as plat:
        pk, ps = plat.registry.add_product()
        reg = register(plat, pk, ps, "c0ffee000001")
        assert Path(plat.ca_path) == state / "ca.pem"
        assert (state / "ecdsa" / "ca.pem").read_bytes() == old_ca
        assert isinstance(
            x509.load_pem_x509_certificate(Path(plat.ca_path).read_bytes()).public_key(),
            rsa.RSAPublicKey,
        )
        old_trust = tmp_path / "board-ca.pem"
        old_trust.write_bytes(old_ca)
        with pytest.raises(ssl.SSLCertVerificationError):
            Client(plat.mqtts_port, client_context(old_trust))
    with running_platform(state, linger_s=1, tls_chain="ecdsa") as plat:
        assert Path(plat.ca_path) == state / "ecdsa" / "ca.pem"
        c = Client(plat.mqtts_port, client_context(old_trust))
        c.close()
        login(plat, reg).disconnect()
    with running_platform(state, linger_s=1) as plat:  # and back: the same RSA root
        login(plat, reg).disconnect()
        assert (state / "ecdsa" / "ca.pem").read_bytes() == old_ca


def test_one_port_serves_tls_and_plain(platform, product, tls):
    """The legacy endpoint's port: regnwl over TLS, then connwl over plain TCP, on one port;
    registration over plain TCP is still refused there (CONNACK 2)."""
    pk, ps = product
    with Client(platform.mqtt_port, tls) as c:
        assert c.connect(*regnwl_login("c0ffee000002", pk, ps)) == 0
        reg = json.loads(c.message("/ext/regnwl").payload)
    dev = login(platform, reg, tls=False)
    dev.publish(f"/{pk}/c0ffee000002/user/update", "plain", qos=1)
    dev.disconnect()
    with Client(platform.mqtt_port) as c:
        assert c.connect(*regnwl_login("c0ffee000003", pk, ps)) == 2


def _stalled(n, port):
    """n connections that start a TLS handshake and never finish it."""
    socks = []
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        # a ClientHello record header that announces more bytes than ever come
        s.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" if i % 2 else b"\x16\x03")
        socks.append(s)
    return socks


def test_stalled_tls_handshakes_end_at_the_connect_deadline(tmp_path):
    """500 stalled handshakes (both MQTT ports and HTTPS) are all closed by the platform within
    connect_timeout_s plus a margin; asyncio's own default would hold them 60 s."""
    timeout = 2.0
    with running_platform(tmp_path / "p", connect_timeout_s=timeout) as plat:
        start = time.monotonic()
        socks = (
            _stalled(200, plat.mqtts_port)
            + _stalled(200, plat.mqtt_port)
            + _stalled(100, plat.https_port)
        )
        deadline = start + timeout + 20  # generous: a loaded 2-core machine
        open_ = {s.fileno(): s for s in socks}
        while open_ and time.monotonic() < deadline:
            ready, _, _ = select.select(list(open_), [], [], 1.0)
            for fd in ready:
                try:
                    data = open_[fd].recv(4096)
                except OSError:
                    data = b""
                if not data:  # closed (an alert may come first)
                    open_.pop(fd).close()
        for s in open_.values():
            s.close()
        assert not open_, f"{len(open_)} of 500 stalled handshakes still open"
        c = Client(plat.mqtts_port, client_context(plat.ca_path))  # the platform still serves
        c.close()


def test_serve_flags_choose_chain_and_versions(tmp_path):
    """`serve --tls-chain ecdsa --tls13` on an old state folder: the old root is what it serves
    under, TLS 1.3 is offered, and the ready line names all three ports."""
    state = tmp_path / "state"
    old_ca = _old_state(state)
    cmd = [sys.executable, "-m", "host_tools.cli", "platform", "serve", "--state", str(state)]
    cmd += ["--port", "0", "--tls-port", "0", "--tls-chain", "ecdsa", "--tls13"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready = json.loads(proc.stdout.readline())
        assert {"mqtt", "mqtts", "https", "ca"} <= set(ready)
        assert Path(ready["ca"]).read_bytes() == old_ca
        for port in (ready["mqtt"], ready["mqtts"], ready["https"]):
            with Client(port, client_context(ready["ca"])) as c:
                assert c.sock.version() == "TLSv1.3"
                assert isinstance(
                    x509.load_der_x509_certificate(c.sock.getpeercert(True)).public_key(),
                    ec.EllipticCurvePublicKey,
                )
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert "ECDSA root from an older zeroburn" in err  # the operator is told what happened

# Fixtures for the virtual board tests: boards on both runtimes, a TLS server for Aliyun names.
import datetime
import socket
import ssl
import textwrap
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from host_tools.emulator.board import VirtualBoard

ALIYUN_HOST = "a1B2C3D4E5F.iot-as-mqtt.cn-shanghai.aliyuncs.com"


@pytest.fixture(params=["micropython", "cpython"])
def runtime(request):
    if request.param == "micropython":
        request.getfixturevalue("micropython")  # the VM must exist here: fail, never skip
    return request.param


@pytest.fixture
def make_board(tmp_path):
    """make_board(runtime, main_source, **kwargs) -> a VirtualBoard with that main.py, not
    started; every board is stopped at the end of the test."""
    boards = []

    def make(runtime, main=None, name="flash", **kwargs):
        flash = tmp_path / name
        flash.mkdir(exist_ok=True)
        if main is not None:
            (flash / "main.py").write_text(textwrap.dedent(main))
        b = VirtualBoard(flash, runtime=runtime, **kwargs)
        boards.append(b)
        return b

    yield make
    for b in boards:
        b.stop()


def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca_and_cert(hosts):
    """A throwaway ECDSA root and a server certificate for `hosts`: (ca_pem, cert_pem, key_pem)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("zeroburn test root"))
        .issuer_name(_name("zeroburn test root"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(h) for h in hosts]), False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return ca.public_bytes(pem).decode(), cert.public_bytes(pem).decode(), key_pem.decode()


@pytest.fixture(scope="session")
def tls_echo(tmp_path_factory):
    """A TLS echo server on 127.0.0.1 with a certificate for *.iot-as-mqtt.cn-shanghai...;
    yields (port, ca_pem). It echoes each chunk back, prefixed with b'echo:'."""
    d = tmp_path_factory.mktemp("tls")
    ca_pem, cert_pem, key_pem = make_ca_and_cert(["*.iot-as-mqtt.cn-shanghai.aliyuncs.com"])
    (d / "cert.pem").write_text(cert_pem)
    (d / "key.pem").write_text(key_pem)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(d / "cert.pem", d / "key.pem")
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(16)
    stop = threading.Event()

    def serve_one(conn):
        try:
            with ctx.wrap_socket(conn, server_side=True) as s:
                s.settimeout(20)
                while True:
                    data = s.recv(4096)
                    if not data:
                        return
                    s.sendall(b"echo:" + data)
        except (OSError, ssl.SSLError):
            pass

    def accept():
        while not stop.is_set():
            try:
                conn, _ = lsock.accept()
            except OSError:
                return
            threading.Thread(target=serve_one, args=(conn,), daemon=True).start()

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield lsock.getsockname()[1], ca_pem
    stop.set()
    lsock.shutdown(socket.SHUT_RDWR)
    lsock.close()

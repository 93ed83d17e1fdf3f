# Fixtures for the firmware tests: throwaway CAs and certificates, the test broker, both runtimes.
import contextlib
import datetime
import io
import json
import os

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from host_tools.paths import BUILD_LIB, FIRMWARE, UMQTT_SIMPLE
from tests.conftest import run_micropython
from tests.firmware.broker import Broker
from tests.firmware.cpy import HERE, Runtime

PK, SECRET = "a1B2C3D4E5F", "0123456789abcdef"
# What mp/fw_scenarios.py's last line, "RESULT [...]", lists, in order.
RESULT_KEYS = (
    "stop",
    "regs",
    "has_token",
    "queued",
    "sleeps",
    "now",
    "feeds",
    "peak_alloc",
    "slept",
    "meta",
    "trace",
)


def scenario_result(line):
    """fw_scenarios' RESULT line as a dict."""
    items = json.loads(line.removeprefix("RESULT "))
    assert len(items) == len(RESULT_KEYS), line
    return dict(zip(RESULT_KEYS, items, strict=True))


MP_PATH = [FIRMWARE, BUILD_LIB, HERE / "mp"]


def _ca(cn):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _pem(cert):
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="session")
def certs(tmp_path_factory):
    """ca.pem (two roots: a decoy first, then the real one), other-ca.pem, server.pem."""
    d = tmp_path_factory.mktemp("certs")
    ca_key, ca = _ca("zeroburn test root")
    _, decoy = _ca("zeroburn decoy root")
    _, other = _ca("zeroburn unknown root")
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        # localhost only, no IP: connecting to "127.0.0.1" must fail the host-name check
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    (d / "ca.pem").write_bytes(b"# bundle\n" + _pem(decoy) + _pem(ca))
    (d / "other-ca.pem").write_bytes(_pem(other))
    (d / "server.pem").write_bytes(
        _pem(server)
        + key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return d


@pytest.fixture
def broker(certs):
    b = Broker(str(certs / "server.pem"), {PK: SECRET})
    yield b
    b.close()


@pytest.fixture(params=["cpython", "micropython"])
def runtime(request):
    return request.param


class Runner:
    """Runs firmware-side test code (tests/firmware/mp) in one of the two runtimes, in cwd."""

    def __init__(self, runtime, cwd, micropython=None):
        self.runtime = runtime
        self.cwd = cwd
        self.micropython = micropython
        self.path = MP_PATH

    def call(self, module, func, *args, heap=None, timeout=60):
        """module.func(*args); returns the printed output."""
        if self.runtime == "micropython":
            code = "import %s\n%s.%s(*%s)\n" % (module, module, func, json.dumps(list(args)))
            proc = run_micropython(
                self.micropython, code, path=self.path, heap=heap, timeout=timeout, cwd=self.cwd
            )
            assert proc.returncode == 0, proc.stdout + proc.stderr
            return proc.stdout
        out = io.StringIO()
        old = os.getcwd()
        os.chdir(self.cwd)
        try:
            with contextlib.redirect_stdout(out):
                getattr(Runtime(self.path).load(module), func)(*args)
        finally:
            os.chdir(old)
        return out.getvalue()


@pytest.fixture
def run(runtime, tmp_path, request):
    mp = request.getfixturevalue("micropython") if runtime == "micropython" else None
    return Runner(runtime, tmp_path, mp)


def umqtt_1_4(dest):
    """micropython-lib's umqtt.simple 1.4 as it differs from 1.3.4 in what the firmware meets:
    an SSLContext `ssl=` argument instead of `ssl_params`, `if self.user:` and wait_msg()
    returning the packet type of a PUBLISH. Derived at test time from the fetched 1.3.4 (no
    third-party source in the repository); micropython-lib's own connect() is replaced by ours.
    """
    src = UMQTT_SIMPLE.read_text()
    edits = [
        ("ssl=False, ssl_params={}):", "ssl=None):"),
        ("        self.ssl_params = ssl_params\n", ""),
        ("if self.user is not None:", "if self.user:"),
        (
            "        elif op & 6 == 4:\n            assert 0\n",
            "        elif op & 6 == 4:\n            assert 0\n        return op\n",
        ),
    ]
    for old, new in edits:
        assert src.count(old) == (2 if "self.user" in old else 1), old
        src = src.replace(old, new)
    (dest / "umqtt").mkdir(parents=True, exist_ok=True)
    (dest / "umqtt" / "simple.py").write_text(src)
    return dest


@pytest.fixture(params=["1.3.4", "1.4"])
def umqtt_version(request, run, tmp_path_factory):
    if request.param == "1.4":
        lib = umqtt_1_4(tmp_path_factory.mktemp("umqtt14"))
        run.path = [FIRMWARE, lib, HERE / "mp"]
    return request.param

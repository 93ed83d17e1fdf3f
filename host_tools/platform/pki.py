# Test PKI of the emulator, shaped like Aliyun's: an RSA-2048 root, an intermediate, and a leaf
# for every host name the emulator answers for (docs/platform-tls.md). ECDSA is an option.
import datetime
import ipaddress
import logging
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

log = logging.getLogger("zeroburn.platform")

REGIONS = (
    "cn-shanghai",
    "cn-beijing",
    "cn-hangzhou",
    "cn-shenzhen",
    "cn-qingdao",
    "cn-zhangjiakou",
    "cn-huhehaote",
    "cn-chengdu",
    "cn-hongkong",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-southeast-3",
    "ap-southeast-5",
    "ap-northeast-1",
    "ap-south-1",
    "us-west-1",
    "us-east-1",
    "eu-central-1",
    "eu-west-1",
)
OTA_HOST = "iotx-ota.oss-cn-shanghai.aliyuncs.com"  # where OTA packages download from (ota.py)
HOST_NAMES = (
    "localhost",
    OTA_HOST,
    *(f"*.iot-as-mqtt.{r}.aliyuncs.com" for r in REGIONS),
    "*.mqtt.iothub.aliyuncs.com",
    *(f"iot-auth.{r}.aliyuncs.com" for r in REGIONS),  # HTTPS dynamic registration
)
CHAINS = ("rsa", "ecdsa")
CA_FILE, SERVER_CERT, SERVER_KEY = "ca.pem", "server.pem", "server.key"
INTERMEDIATE = "intermediate.pem"
# Where the ECDSA option keeps its chain, and where a state folder's ECDSA root made before the
# RSA switch is moved to (so boards flashed with it keep working with `tls_chain="ecdsa"`).
ECDSA_DIR = "ecdsa"
_ORG = "zeroburn test platform"


def _name(cn):
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ORG),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _write_private(path, key):
    data = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _pem(cert):
    return cert.public_bytes(serialization.Encoding.PEM)


def _new_key(kind):
    return (
        rsa.generate_private_key(65537, 2048)
        if kind == "rsa"
        else ec.generate_private_key(ec.SECP256R1())
    )


def _usage(ca, encipher=False):
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        # static-RSA suites encrypt the premaster secret to the leaf key: mbedTLS checks this bit
        key_encipherment=encipher,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _issue(subject, key, issuer_name, issuer_key, days, path_length=None, sans=None):
    """A certificate for key, signed by issuer_key; a CA when path_length is not None."""
    now = datetime.datetime.now(datetime.UTC)
    b = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), False
        )
    )
    if path_length is not None:
        b = b.add_extension(x509.BasicConstraints(ca=True, path_length=path_length), True)
        b = b.add_extension(_usage(ca=True), True)
    else:
        b = b.add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
        b = b.add_extension(_usage(ca=False, encipher=isinstance(key, rsa.RSAPrivateKey)), True)
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        assert sans is not None, "a leaf certificate names its hosts"
        b = b.add_extension(x509.SubjectAlternativeName(sans), False)
    return b.sign(issuer_key, hashes.SHA256())


def _load(cert_path, key_path):
    cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    key = serialization.load_pem_private_key(Path(key_path).read_bytes(), None)
    return cert, key


def _days_left(cert):
    return (cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC)).days


def _is_rsa(cert_path):
    try:
        cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    except ValueError:
        return False
    return isinstance(cert.public_key(), rsa.RSAPublicKey)


def _migrate(state):
    """A state folder from before the RSA switch holds an ECDSA ca.pem + ca.key: move them (and
    their server certificate) into ecdsa/, where the ECDSA option finds them. Nothing is
    deleted."""
    ca = state / CA_FILE
    if not ca.exists() or _is_rsa(ca):
        return
    old = state / ECDSA_DIR
    old.mkdir(exist_ok=True)
    for name in (CA_FILE, "ca.key", SERVER_CERT, SERVER_KEY):
        if (state / name).exists():
            os.replace(state / name, old / name)
    log.warning(
        "platform: %s held an ECDSA root from an older zeroburn; it is now %s and a new RSA "
        "root is %s. Boards flashed with the old ca.pem fail to verify the platform: re-flash "
        "them (they get the new ca.pem), or serve with --tls-chain ecdsa meanwhile",
        ca,
        old / CA_FILE,
        ca,
    )


def _root(d, kind, path_length):
    ca_path, ca_key_path = d / CA_FILE, d / "ca.key"
    if ca_path.exists() and ca_key_path.exists():
        cert, key = _load(ca_path, ca_key_path)
        if _days_left(cert) > 30:
            return cert, key, False
    key = _new_key(kind)
    label = "RSA" if kind == "rsa" else "ECDSA"
    name = _name(f"zeroburn test root CA ({label})")
    cert = _issue(name, key, name, key, 3650, path_length=path_length)
    _write_private(ca_key_path, key)
    ca_path.write_bytes(_pem(cert))
    return cert, key, True


def ensure(state_dir, chain="rsa"):
    """Create (once) the CA and server certificates in state_dir; return (ca, chain, key) paths.

    ca is the root alone (what boards and clients trust); chain is the leaf followed by the
    intermediate (what the server sends; `load_cert_chain` takes it as it is). The root is kept
    across restarts so boards that trust it keep working; the intermediate and leaf are
    re-issued when missing, near expiry, or when the host names changed. chain "ecdsa" is the
    one-level P-256 chain of older zeroburn versions, in state_dir/ecdsa/.
    """
    if chain not in CHAINS:
        raise ValueError(f"tls chain must be one of {', '.join(CHAINS)}, not {chain!r}")
    state = Path(state_dir)
    state.mkdir(parents=True, exist_ok=True)
    _migrate(state)
    d = state if chain == "rsa" else state / ECDSA_DIR
    d.mkdir(exist_ok=True)
    cert_path, key_path = d / SERVER_CERT, d / SERVER_KEY
    if chain == "rsa":
        root, root_key, new = _root(d, "rsa", path_length=1)
        issuer, issuer_key = _intermediate(d, root, root_key, renew=new)
    else:
        issuer, issuer_key, new = _root(d, "ecdsa", path_length=0)
    if new or not _leaf_ok(cert_path, key_path, issuer):
        key = _new_key(chain)
        sans: list[x509.GeneralName] = [x509.DNSName(h) for h in HOST_NAMES]
        sans.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
        leaf = _issue(_name(HOST_NAMES[1]), key, issuer.subject, issuer_key, 825, sans=sans)
        _write_private(key_path, key)
        cert_path.write_bytes(_pem(leaf) + (_pem(issuer) if chain == "rsa" else b""))
    return d / CA_FILE, cert_path, key_path


def _intermediate(d, root, root_key, renew):
    path, key_path = d / INTERMEDIATE, d / "intermediate.key"
    if not renew and path.exists() and key_path.exists():
        cert, key = _load(path, key_path)
        if cert.issuer == root.subject and _days_left(cert) > 30:
            return cert, key
    key = _new_key("rsa")
    cert = _issue(
        _name("zeroburn test issuing CA (RSA)"), key, root.subject, root_key, 1825, path_length=0
    )
    _write_private(key_path, key)
    path.write_bytes(_pem(cert))
    return cert, key


def _leaf_ok(cert_path, key_path, issuer):
    if not key_path.exists():
        return False
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    except (OSError, ValueError, x509.ExtensionNotFound):
        return False
    ski = x509.SubjectKeyIdentifier.from_public_key(issuer.public_key()).digest
    return (
        set(san.get_values_for_type(x509.DNSName)) == set(HOST_NAMES)
        and aki.key_identifier == ski
        and _days_left(cert) > 7
    )


def ca_der(ca_path):
    """The CA certificate as DER (what MicroPython's load_verify_locations(cadata=) takes)."""
    cert = x509.load_pem_x509_certificate(Path(ca_path).read_bytes())
    return cert.public_bytes(serialization.Encoding.DER)

# Test PKI of the emulator: an ECDSA P-256 root CA and a server certificate for Aliyun's hosts.
import datetime
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

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
)
CA_FILE, SERVER_CERT, SERVER_KEY = "ca.pem", "server.pem", "server.key"


def _name(cn):
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "zeroburn test platform"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _write_private(path, data):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def ensure(state_dir):
    """Create (once) the CA and server certificate in state_dir; return their paths.

    The CA is kept across restarts so boards and clients that trust it keep working.
    The server certificate is re-issued only when missing or when its names changed.
    """
    state = Path(state_dir)
    state.mkdir(parents=True, exist_ok=True)
    ca_path, cert_path, key_path = state / CA_FILE, state / SERVER_CERT, state / SERVER_KEY
    ca_key_path = state / "ca.key"
    now = datetime.datetime.now(datetime.UTC)
    if not (ca_path.exists() and ca_key_path.exists()):
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(_name("zeroburn test root CA"))
            .issuer_name(_name("zeroburn test root CA"))
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )
        _write_private(
            ca_key_path,
            ca_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
        ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
        cert_path.unlink(missing_ok=True)
    if not (cert_path.exists() and key_path.exists() and _names_ok(cert_path)):
        ca_cert = x509.load_pem_x509_certificate(ca_path.read_bytes())
        ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), None)
        key = ec.generate_private_key(ec.SECP256R1())
        sans = [x509.DNSName(h) for h in HOST_NAMES]
        sans.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name("localhost"))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=825))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        _write_private(
            key_path,
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return ca_path, cert_path, key_path


def _names_ok(cert_path):
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        expires = cert.not_valid_after_utc
    except (ValueError, x509.ExtensionNotFound):
        return False
    left = expires - datetime.datetime.now(datetime.UTC)
    return set(san.get_values_for_type(x509.DNSName)) == set(HOST_NAMES) and left.days > 7


def ca_der(ca_path):
    """The CA certificate as DER (what MicroPython's load_verify_locations(cadata=) takes)."""
    cert = x509.load_pem_x509_certificate(Path(ca_path).read_bytes())
    return cert.public_bytes(serialization.Encoding.DER)

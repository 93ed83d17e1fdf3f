# The CA bundle (ca.pem) for real Aliyun: roots taken from Aliyun's installed Python SDK at build
# time, each checked against a SHA-256 fingerprint pinned here; plus checks for a user's bundle.
import ast
import base64
import datetime
import hashlib
import importlib.metadata
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from host_tools.errors import ZeroburnError

# Where the roots come from: Aliyun's own device SDK, pinned in pyproject.toml (pip checks the
# wheel), the same list its MQTT client trusts. The attribute is name-mangled in the class body.
SDK_DIST = "aliyun-iot-linkkit"
SDK_VERSION = "1.2.13"
SDK_FILE = "linkkit/linkkit.py"
SDK_ATTRIBUTE = "__ALIYUN_BROKER_CA_DATA"

WARN_DAYS = 548  # 18 months: time to roll a replacement ca.pem out to a fleet


@dataclass(frozen=True)
class Root:
    name: str
    sha256: str  # of the DER certificate, lower-case hex
    why: str


# Pinned fingerprints. The four GlobalSign roots match the values in Mozilla's CA list; the
# Aliyun IoT Root CA is the certificate Aliyun publishes for its Enterprise instances' port 8883.
ROOTS = (
    Root(
        "GlobalSign Root CA (R1)",
        "ebd41040e4bb3ec742c9e381d31ef2a41a48b6685c96e7cef3c1df6cd4331c99",
        "signs the certificates of Aliyun's MQTT endpoints on port 1883/443; expires 2028-01-28",
    ),
    Root(
        "Aliyun IoT Root CA",
        "7ca438a3976b5242d231f861499822da855831382735836b361e7e9715661676",
        "Aliyun's own root, Enterprise instances on port 8883; valid to 2053",
    ),
    Root(
        "GlobalSign Root CA - R6",
        "2cabeafe37d06ca22aba7391c0033d25982952c453647349763a3ab5ad6ccf69",
        "GlobalSign successor root (RSA 4096), to 2034",
    ),
    Root(
        "GlobalSign Root E46",
        "cbb9c44d84b8043e1050ea31a69f514955d7bfd2e2c6b49301019ad61d9f5058",
        "GlobalSign successor root (ECDSA P-384), to 2046",
    ),
    Root(
        "GlobalSign Root R46",
        "4fa3126d8d3a11d1c4855a4f807cbad6cf919d3a5a88b03bea2c6372d93c40c9",
        "GlobalSign successor root (RSA 4096), to 2046",
    ),
)

_PEM_BLOCK = re.compile(r"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", re.S)


def fingerprint(cert):
    return hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()


def certificates(pem_text, origin="bundle"):
    """Every certificate of a PEM text; ValueError if there is none or one does not parse."""
    blocks = _PEM_BLOCK.findall(pem_text)
    if not blocks:
        raise ValueError(f"{origin} holds no PEM certificate (-----BEGIN CERTIFICATE----- ...)")
    out = []
    for i, body in enumerate(blocks, 1):
        try:
            der = base64.b64decode("".join(body.split()), validate=True)
            out.append(x509.load_der_x509_certificate(der))
        except ValueError as e:
            raise ValueError(f"{origin}: certificate #{i} does not parse ({e})")
    return out


def to_pem(certs):
    """Canonical PEM, one comment line above each certificate (the firmware skips them)."""
    parts = []
    for c in certs:
        parts.append(
            f"# {c.subject.rfc4514_string()}\n"
            f"# sha256 {fingerprint(c)}, expires {c.not_valid_after_utc.date()}\n"
        )
        parts.append(c.public_bytes(Encoding.PEM).decode())
    return "".join(parts)


def _sdk_source():
    """Text of linkkit/linkkit.py from the installed SDK, checked against pip's RECORD."""
    try:
        dist = importlib.metadata.distribution(SDK_DIST)
    except importlib.metadata.PackageNotFoundError:
        raise ZeroburnError(
            f"the Aliyun CA bundle is taken from the {SDK_DIST} package, which is not installed: "
            "run `make setup` (or `pip install zeroburn`), or give your own bundle with --ca FILE"
        )
    if dist.version != SDK_VERSION:
        raise ZeroburnError(
            f"{SDK_DIST} {dist.version} is installed, but the CA fingerprints are pinned for "
            f"{SDK_VERSION}: run `make setup`"
        )
    entry = next((f for f in dist.files or () if f.as_posix() == SDK_FILE), None)
    if entry is None:
        raise ZeroburnError(f"{SDK_DIST} {SDK_VERSION} has no {SDK_FILE}")
    data = Path(str(dist.locate_file(entry))).read_bytes()
    if entry.hash is not None and entry.hash.mode == "sha256":
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        if digest != entry.hash.value:
            raise ZeroburnError(
                f"{SDK_FILE} of {SDK_DIST} differs from what pip installed (RECORD hash): "
                "reinstall it with `make clean setup`"
            )
    return data.decode()


def sdk_roots_pem():
    """The PEM text of the SDK's broker CA list (a string literal in a class body, read with
    ast: nothing of the SDK is imported or run)."""
    for node in ast.walk(ast.parse(_sdk_source())):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            if any(getattr(t, "id", None) == SDK_ATTRIBUTE for t in node.targets):
                return node.value.value
    raise ZeroburnError(f"{SDK_FILE} of {SDK_DIST} has no {SDK_ATTRIBUTE}")


def aliyun_roots():
    """The pinned roots, in ROOTS order, each verified by fingerprint."""
    try:
        found = {fingerprint(c): c for c in certificates(sdk_roots_pem(), SDK_DIST)}
    except ValueError as e:
        raise ZeroburnError(str(e))
    missing = [r.name for r in ROOTS if r.sha256 not in found]
    if missing:
        raise ZeroburnError(
            f"{SDK_DIST} {SDK_VERSION} no longer ships the pinned root(s) {', '.join(missing)} "
            "(fingerprint mismatch): refusing to build the CA bundle"
        )
    return [found[r.sha256] for r in ROOTS]


def aliyun_bundle():
    """ca.pem for real Aliyun endpoints (PEM text)."""
    return to_pem(aliyun_roots())


def write_bundle(path):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(aliyun_bundle())
    return path


def _now(now):
    return now or datetime.datetime.now(datetime.UTC)


def expiring(certs, now=None, days=WARN_DAYS):
    """[(certificate, days left)] for roots that expire within `days` (expired ones included)."""
    now = _now(now)
    out = []
    for c in certs:
        left = (c.not_valid_after_utc - now).days
        if left < days:
            out.append((c, left))
    return out


def check_bundle(pem_text, origin="bundle", now=None):
    """Check a bundle meant for a board: (certificates, warnings). ValueError when unusable:
    nothing parses, or every root has expired (the board could trust nothing)."""
    certs = certificates(pem_text, origin)
    now = _now(now)
    warnings = []
    usable = 0
    for c in certs:
        name = c.subject.rfc4514_string()
        left = (c.not_valid_after_utc - now).days
        if c.not_valid_after_utc <= now:
            warnings.append(f"{name} expired on {c.not_valid_after_utc.date()}: it trusts nothing")
            continue
        usable += 1
        if left < WARN_DAYS:
            warnings.append(
                f"{name} expires on {c.not_valid_after_utc.date()} ({left} days): plan a new "
                "ca.pem before then (`zeroburn flash --ca FILE` replaces only the bundle)"
            )
        try:
            is_ca = c.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            is_ca = False
        if not is_ca:
            warnings.append(f"{name} is not a CA certificate; a board expects root certificates")
    if not usable:
        raise ValueError(f"{origin}: every certificate in it has expired")
    return certs, warnings


def main(argv=None):
    """python -m host_tools.build.cabundle [--out FILE]: build the bundle and show its roots."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        certs = aliyun_roots()
        for root, cert in zip(ROOTS, certs, strict=True):
            print(f"{root.sha256}  {cert.not_valid_after_utc.date()}  {root.name}")
        _, warnings = check_bundle(to_pem(certs))
        for w in warnings:
            print(f"warning: {w}", file=sys.stderr)
        if argv[:1] == ["--out"] and len(argv) == 2:
            print(f"wrote {write_bundle(argv[1])}")
    except ZeroburnError as e:
        print(f"zeroburn: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

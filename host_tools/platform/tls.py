# What the emulator's TLS endpoints present: versions, cipher suites and the certificate chain,
# chosen to admit every client Aliyun admits (PROTOCOL.md section 3, docs/platform-tls.md).
import ssl

from host_tools.platform import pki

# Aliyun's C SDK (Link SDK 4.2.0, mbedTLS) offers only the four static-RSA AES-CBC suites;
# Python's and Node's clients pick ECDHE-RSA AES-GCM. Nothing else is offered by the server, so a
# client limited to NULL, anonymous, export or RC4 suites finds no common suite.
RSA_SUITES = (
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "AES256-SHA256",  # TLS_RSA_WITH_AES_256_CBC_SHA256 0x003D
    "AES256-SHA",  # TLS_RSA_WITH_AES_256_CBC_SHA 0x0035
    "AES128-SHA256",  # TLS_RSA_WITH_AES_128_CBC_SHA256 0x003C
    "AES128-SHA",  # TLS_RSA_WITH_AES_128_CBC_SHA 0x002F
)
ECDSA_SUITES = ("ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384")
VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


def server_context(state_dir, chain="rsa", max_version="1.2"):
    """(SSLContext, ca_path) for every TLS listener of the platform (MQTT and HTTPS).

    TLS 1.2 always; TLS 1.3 only when max_version is "1.3" (whether Aliyun's endpoints offer
    it is [UNK] in PROTOCOL.md: a setting, default off)."""
    if max_version not in VERSIONS:
        raise ValueError(f"tls_max_version must be one of {', '.join(VERSIONS)}")
    ca, cert, key = pki.ensure(state_dir, chain)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = VERSIONS[max_version]
    ctx.set_ciphers(":".join(RSA_SUITES if chain == "rsa" else ECDSA_SUITES))
    ctx.load_cert_chain(cert, key)  # leaf + intermediate: the server sends both
    # Devices never resume TLS sessions; issuing tickets costs every handshake time.
    ctx.num_tickets = 0
    ctx.options |= ssl.OP_NO_TICKET | ssl.OP_CIPHER_SERVER_PREFERENCE
    return ctx, ca

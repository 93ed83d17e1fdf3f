# A TLS client limited to what Aliyun's C SDK (Link SDK 4.2.0, mbedTLS) offers: TLS 1.2 only, the
# four static-RSA AES-CBC suites, rsa_pkcs1 signature algorithms. Python's ssl has no call for the
# signature algorithms, so the test runs this file with OPENSSL_CONF = SIGALGS_CONF below.
# usage: csdk_tls.py hello PORT | csdk_tls.py cycle PORT CA HOST PK PS DN
import json
import socket
import ssl
import sys

SUITES = "AES256-SHA256:AES256-SHA:AES128-SHA256:AES128-SHA"
SIGALGS_CONF = """openssl_conf = openssl_init
[openssl_init]
ssl_conf = ssl_sect
[ssl_sect]
system_default = system_default_sect
[system_default_sect]
SignatureAlgorithms = RSA+SHA512:RSA+SHA384:RSA+SHA256:RSA+SHA224
"""


def context(ca=None):
    ctx = ssl.create_default_context(cafile=ca)
    if ca is None:
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(SUITES)
    return ctx


def main(argv):
    if argv[0] == "hello":  # send the ClientHello to a recorder (the handshake then fails)
        raw = socket.create_connection(("127.0.0.1", int(argv[1])), timeout=10)
        try:
            context().wrap_socket(raw, server_hostname="a1b2.iot-as-mqtt.cn-shanghai.aliyuncs.com")
        except (OSError, ssl.SSLError):
            pass
        return 0
    from host_tools.platform.testing import Client, connwl_login, regnwl_login

    port, ca, host, pk, ps, dn = argv[1:]
    ctx = context(ca)
    with Client(int(port), ctx, server_hostname=host) as c:
        suite = c.sock.cipher()
        assert c.connect(*regnwl_login(dn, pk, ps)) == 0
        reg = json.loads(c.message("/ext/regnwl").payload)
        c.disconnect()
    with Client(int(port), ctx, server_hostname=host) as c:
        assert c.connect(*connwl_login(reg["clientId"], dn, pk, reg["deviceToken"])) == 0
        pid = c.publish(f"/{pk}/{dn}/user/update", {"t": 21.5}, qos=1)
        c.disconnect()
    print(json.dumps({"cipher": suite[0], "version": suite[1], "puback": pid}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

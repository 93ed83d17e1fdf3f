# The board's network: host map + verified TLS to a local server holding a certificate for an
# Aliyun host name, MicroPython SSL socket semantics, and a partition on a live connection.
import ast

from tests.emulator.conftest import ALIYUN_HOST
from tests.emulator.test_shims import WAIT, results

TLS = (
    WAIT
    + """
import binascii, network, select, socket, ssl
HOST = "%s"
PORT = %d
w = network.WLAN(network.STA_IF)
w.active(True)
w.connect("lab", "pw")
while not w.isconnected():
    time.sleep_ms(20)
pem = open("ca.pem").read()
b64 = pem.split("-----BEGIN CERTIFICATE-----")[1].split("-----END CERTIFICATE-----")[0]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
print("R default_verify", ctx.verify_mode)
ctx.verify_mode = ssl.CERT_REQUIRED
ctx.load_verify_locations(cadata=binascii.a2b_base64(b64.replace("\\n", "")))
addr = socket.getaddrinfo(HOST, PORT)[0][-1]


def connect(name):
    s = socket.socket()
    s.settimeout(5)
    s.connect(addr)
    try:
        return ctx.wrap_socket(s, server_hostname=name)
    except Exception:
        s.close()
        raise


try:
    connect("mqtt.example.com")
    print("R wrong_name", "accepted")
except Exception as e:
    print("R wrong_name", "refused")
t = connect(HOST)
t.setblocking(False)
print("R nothing_yet", repr(t.read(16)))
poller = select.poll()
poller.register(t, select.POLLIN)


def exchange(msg, wait_ms):
    t.write(msg)
    got = b""
    for _ in range(wait_ms // 100):
        poller.poll(100)
        d = t.read(64)
        if d:
            got += d
        if len(got) >= len(msg) + 5:
            break
    return got


print("R echo", repr(exchange(b"hello", 10000)))
print("R ready", 1)
wait_button(0)
print("R partitioned", repr(exchange(b"ping", 1000)))
wait_button(1)
got = b""
for _ in range(100):
    poller.poll(100)
    d = t.read(64)
    if d:
        got += d
    if got:
        break
print("R healed", repr(got))
t.close()
"""
)


def test_host_map_and_verified_tls_reach_a_local_aliyun_name(runtime, make_board, tls_echo):
    port, ca_pem = tls_echo
    b = make_board(runtime, TLS % (ALIYUN_HOST, port))
    (b.flash / "ca.pem").write_text(ca_pem)
    b.start()
    b.wait_for("R ready", 30)
    b.partition(True)
    b.button(0, True)
    b.wait_for("R partitioned", 30)
    b.partition(False)
    b.button(0, False)
    b.wait_for("R healed", 30)
    r = results(b)
    assert r["default_verify"] == "0"  # as MicroPython: verification must be asked for
    assert r["wrong_name"] == "refused"
    assert ast.literal_eval(r["nothing_yet"]) is None  # non-blocking SSL read: None, no error
    assert ast.literal_eval(r["echo"]) == b"echo:hello"
    assert ast.literal_eval(r["partitioned"]) == b""  # nothing crosses a partition...
    assert ast.literal_eval(r["healed"]) == b"echo:ping"  # ...and the held bytes flow after


def test_unmapped_names_do_not_resolve(runtime, make_board):
    b = make_board(
        runtime,
        """
import network, socket, time
w = network.WLAN(network.STA_IF)
w.active(True)
w.connect("lab", "pw")
while not w.isconnected():
    time.sleep_ms(20)
for name in ("iot.example.com", "a1.iot-as-mqtt.cn-shanghai.aliyuncs.com", "localhost"):
    try:
        socket.getaddrinfo(name, 1883)
        print("R", name.split(".")[0], "ok")
    except OSError as e:
        print("R", name.split(".")[0], e.args[0])
print("R end", 1)
""",
        host_map={"*.aliyuncs.com": "127.0.0.1"},
    )
    b.start()
    b.wait_for("R end", 20)
    r = results(b)
    assert r["iot"] == "-202"
    assert r["a1"] == "ok"
    assert r["localhost"] == "-202"  # only what the host map names

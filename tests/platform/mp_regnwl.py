# Runs under the MicroPython VM: a verified TLS regnwl against the platform, as the firmware does.
import select
import socket
import ssl
import struct
import sys


def field(b):
    return struct.pack("!H", len(b)) + b


def read_exact(s, poller, n):
    out = b""
    while len(out) < n:
        if not poller.poll(5000):
            raise OSError("timeout")
        chunk = s.read(n - len(out))
        if not chunk:
            raise OSError("closed")
        out += chunk
    return out


def read_packet(s, poller):
    first = read_exact(s, poller, 1)[0]
    length, shift = 0, 0
    while True:
        b = read_exact(s, poller, 1)[0]
        length |= (b & 127) << shift
        shift += 7
        if not b & 128:
            break
    return first, read_exact(s, poller, length)


port, host, der_path, cid, user, pw = sys.argv[1:7]
with open(der_path, "rb") as f:
    der = f.read()
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.verify_mode = ssl.CERT_REQUIRED
ctx.load_verify_locations(cadata=der)
sock = socket.socket()
sock.connect(socket.getaddrinfo("127.0.0.1", int(port))[0][-1])
try:
    s = ctx.wrap_socket(sock, server_hostname=host)
except Exception as e:
    print("TLS_FAILED", e)
    sys.exit(3)
poller = select.poll()
poller.register(s, select.POLLIN)
body = field(b"MQTT") + bytes((4, 0xC2)) + struct.pack("!H", 60)
body += field(cid.encode()) + field(user.encode()) + field(pw.encode())
n = len(body)
header = bytearray((0x10,))
while True:
    header.append((n & 127) | (128 if n > 127 else 0))
    n >>= 7
    if not n:
        break
s.write(bytes(header) + body)
first, connack = read_packet(s, poller)
print("CONNACK", connack[1])
first, pub = read_packet(s, poller)
n = struct.unpack("!H", pub[:2])[0]
print("TOPIC", pub[2 : 2 + n].decode())
print("PAYLOAD", pub[2 + n :].decode())
s.write(b"\xe0\x00")
s.close()

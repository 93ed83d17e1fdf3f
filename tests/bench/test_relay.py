# The byte-counting relays: raw bytes (TLS included) and MQTT bytes alone (TLS ended in the relay).
import socket
import ssl
import threading

from host_tools.load import loadgen as lg


class TlsEcho:
    """A TLS echo server on loopback with its own throwaway CA (stands in for the platform)."""

    def __init__(self, work):
        self.ca_pem, cert, key = lg.make_relay_ca(work)
        (work / "ca.pem").write_text(self.ca_pem)
        self.ca_path = work / "ca.pem"
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(10)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        conn, _ = self.sock.accept()
        try:
            with self.ctx.wrap_socket(conn, server_side=True) as tls:
                tls.settimeout(10)
                while data := tls.recv(4096):
                    tls.sendall(data)
        except (ssl.SSLError, OSError):
            pass  # a client that refuses our certificate: the refusal test expects it
        finally:
            self.sock.close()


def test_relays_count_wire_and_plaintext_bytes(tmp_path):
    echo = TlsEcho(tmp_path / "upstream")
    with lg.TlsTerminatingRelay(
        "127.0.0.1", echo.port, echo.ca_path, "localhost", tmp_path / "relay"
    ) as plain:
        with lg.ByteRelay("127.0.0.1", plain.port) as wire:
            ctx = ssl.create_default_context(cadata=plain.ca_pem)
            with socket.create_connection(("127.0.0.1", wire.port), timeout=10) as raw:
                with ctx.wrap_socket(raw, server_hostname="localhost") as c:
                    c.settimeout(10)
                    msg = b"x" * 1000
                    c.sendall(msg)
                    got = b""
                    while len(got) < len(msg):
                        got += c.recv(4096)
            assert got == msg
            # the relays count as data flows; wait (bounded) for the echo to be counted
            for _ in range(100):
                if plain.counts()["down"] >= 1000:
                    break
                threading.Event().wait(0.05)
            p, w = plain.counts(), wire.counts()
    assert p["up"] == 1000 and p["down"] == 1000  # exactly the application bytes
    assert w["up"] > 1000 and w["down"] > 1000  # TLS records and handshake on top
    assert w["connections"] == 1 and len(wire.session_counts()) == 1


def test_tls_relay_refuses_an_untrusted_upstream(tmp_path):
    echo = TlsEcho(tmp_path / "upstream")
    other_ca, _, _ = lg.make_relay_ca(tmp_path / "other")
    (tmp_path / "other.pem").write_text(other_ca)
    with lg.TlsTerminatingRelay(
        "127.0.0.1", echo.port, tmp_path / "other.pem", "localhost", tmp_path / "relay"
    ) as plain:
        ctx = ssl.create_default_context(cadata=plain.ca_pem)
        with socket.create_connection(("127.0.0.1", plain.port), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as c:
                c.settimeout(10)
                c.sendall(b"hello")
                assert c.recv(100) == b""  # relay closed: it would not trust the server
    assert plain.counts()["up"] == 0

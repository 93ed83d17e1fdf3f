# The foundation: the CLI table, the MicroPython VM, and the hash-checked umqtt fetch.
import hashlib
import http.server
import io
import subprocess
import sys
import tarfile
import threading

import pytest

from host_tools import cli
from host_tools.build import deps
from host_tools.errors import ZeroburnError
from tests.conftest import run_micropython


def test_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for name in cli.COMMANDS:
        assert name in out


def test_every_subcommand_has_help():
    for name in cli.COMMANDS:
        proc = subprocess.run(
            [sys.executable, "-m", "host_tools.cli", name, "--help"],
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 0, (name, proc.stderr)
        assert "usage: zeroburn " + name in proc.stdout


def test_pinned_umqtt_is_unpacked_and_imports_in_micropython(micropython, umqtt_simple):
    pin = deps.pinned_deps()["umqtt-simple"]
    assert pin["version"] == "1.3.4"
    proc = run_micropython(
        micropython,
        "from umqtt.simple import MQTTClient; print(MQTTClient.__name__)",
        path=[umqtt_simple.parent.parent],
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "MQTTClient"


def test_normalize_follows_pep503():
    assert deps.normalize("micropython-umqtt.simple") == "micropython-umqtt-simple"
    assert deps.normalize("Foo__Bar.baz") == "foo-bar-baz"


def _tarball(project, version, member, content):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo(f"{project}-{version}/{member}")
        info.size = len(content)
        tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


@pytest.fixture
def local_index(tmp_path):
    """A PEP 503 HTML index on loopback serving one tarball; yields (url, tarball bytes)."""
    blob = _tarball("demo-pkg", "1.0", "umqtt/simple.py", b"print('hi')\n")
    digest = hashlib.sha256(blob).hexdigest()
    state = {"digest": digest}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/simple/demo-pkg/":
                body = (
                    f'<html><body><a href="/files/demo-pkg-1.0.tar.gz#sha256={state["digest"]}">'
                    "demo-pkg-1.0.tar.gz</a></body></html>"
                ).encode()
                ctype = "text/html"
            elif self.path == "/files/demo-pkg-1.0.tar.gz":
                body, ctype = blob, "application/octet-stream"
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/simple", digest, state
    server.shutdown()


def test_fetch_verifies_hash_and_unpacks(local_index, tmp_path, monkeypatch):
    url, digest, _ = local_index
    monkeypatch.setenv("PIP_INDEX_URL", url)
    dep = {"project": "demo-pkg", "version": "1.0", "sha256": digest, "member": "umqtt/simple.py"}
    path = deps.fetch(dep, dest_root=tmp_path / "lib", cache=tmp_path / "cache")
    assert path.read_bytes() == b"print('hi')\n"


def test_fetch_refuses_a_digest_that_differs_from_the_pin(local_index, tmp_path, monkeypatch):
    url, digest, _ = local_index
    monkeypatch.setenv("PIP_INDEX_URL", url)
    dep = {
        "project": "demo-pkg",
        "version": "1.0",
        "sha256": "0" * 64,
        "member": "umqtt/simple.py",
    }
    with pytest.raises(ZeroburnError, match="refusing"):
        deps.fetch(dep, dest_root=tmp_path / "lib", cache=tmp_path / "cache")
    assert not (tmp_path / "lib").exists()


def test_fetch_says_clearly_when_the_index_is_unreachable(tmp_path, monkeypatch):
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    dep = {"project": "demo-pkg", "version": "1.0", "sha256": "0" * 64, "member": "x.py"}
    with pytest.raises(ZeroburnError, match="cannot reach the package index"):
        deps.fetch(dep, dest_root=tmp_path / "lib", cache=tmp_path / "cache")

# Fixtures for the flashing tests: a virtual board behind a pty (`zeroburn board serve`), the
# platform emulator in-process, and the `zeroburn` CLI run as a user runs it.
import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import stop_process

VENV_BIN = Path(sys.executable).parent
MAC = "24:0a:c4:5e:1f:07"
DN = MAC.replace(":", "")
BOOT_MAIN = 'import time\nprint("stock main.py")\nwhile True:\n    time.sleep_ms(100)\n'


def zeroburn(*args, env=None, timeout=180):
    """Run the installed `zeroburn` command; CompletedProcess with text output."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ZEROBURN_")}
    full_env.update(env or {})
    return subprocess.run(
        [str(VENV_BIN / "zeroburn"), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )


def snapshot(folder):
    """{relative path: (size, mtime_ns, bytes)} of every file under folder."""
    out = {}
    for p in sorted(Path(folder).rglob("*")):
        if p.is_file():
            st = p.stat()
            out[p.relative_to(folder).as_posix()] = (st.st_size, st.st_mtime_ns, p.read_bytes())
    return out


@pytest.fixture
def served(tmp_path, micropython):
    """A virtual board (MicroPython VM) on a pty with a stock-looking flash; yields
    (link path, flash folder). The board is stopped at the end."""
    flash = tmp_path / "flash"
    flash.mkdir()
    (flash / "boot.py").write_text("# boot.py\n")
    (flash / "main.py").write_text(BOOT_MAIN)
    link = tmp_path / "ttyZB"
    proc = subprocess.Popen(
        [
            str(VENV_BIN / "zeroburn"),
            "board",
            "serve",
            "--flash",
            str(flash),
            "--mac",
            MAC,
            "--link",
            str(link),
            "--echo",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        r, _, _ = select.select([proc.stdout], [], [], 30)
        assert r, "`zeroburn board serve` printed nothing in 30 s"
        json.loads(os.read(proc.stdout.fileno(), 4096).decode().splitlines()[0])
        seen = ""
        end = time.monotonic() + 30
        while "stock main.py" not in seen and time.monotonic() < end:
            r, _, _ = select.select([proc.stderr], [], [], 0.5)
            if r:
                seen += os.read(proc.stderr.fileno(), 4096).decode(errors="replace")
        assert "stock main.py" in seen, seen
        yield link, flash
    finally:
        stop_process(proc)


@pytest.fixture
def platform(tmp_path):
    """The platform emulator on free loopback ports with one product: (Platform, pk, ps)."""
    from host_tools.platform.testing import running_platform

    with running_platform(tmp_path / "platform", linger_s=2) as plat:
        pk, ps = plat.registry.add_product()
        yield plat, pk, ps


def registrations(plat, pk, dn):
    from host_tools.platform import registry

    conn = registry.connect(plat.state_dir)
    try:
        row = registry.device(conn, pk, dn)
        return row["registrations"] if row else 0
    finally:
        conn.close()

# The real mpremote against a virtual board served by `zeroburn board serve` (pty and socket://).
import json
import os
import pty
import select
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from tests.conftest import stop_process

VENV_BIN = Path(sys.executable).parent
MAIN = """\
import time
print("main.py running")
while True:
    time.sleep_ms(100)
"""


@pytest.fixture
def served(tmp_path, micropython):
    """`zeroburn board serve` on a flash whose main.py never returns, as a real firmware."""
    flash = tmp_path / "flash"
    flash.mkdir()
    (flash / "boot.py").write_text('print("boot.py ran")\n')
    (flash / "main.py").write_text(MAIN)
    link = tmp_path / "ttyZB"
    proc = subprocess.Popen(
        [
            str(VENV_BIN / "zeroburn"),
            "board",
            "serve",
            "--flash",
            str(flash),
            "--mac",
            "24:0a:c4:aa:bb:cc",
            "--link",
            str(link),
            "--port",
            "0",
            "--echo",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        r, _, _ = select.select([proc.stdout], [], [], 30)
        assert r, "serve printed nothing"
        ready = json.loads(os.read(proc.stdout.fileno(), 4096).decode().splitlines()[0])
        console = Console(proc.stderr)
        # wait until the firmware runs, as a user would (a Ctrl-C during boot.py interrupts
        # boot.py, and main.py still starts)
        console.wait("main.py running")
        yield ready, flash, link, console
    finally:
        stop_process(proc)
    assert proc.returncode == 0


class Console:
    """The board's console as `serve --echo` copies it to stderr."""

    def __init__(self, stream):
        self.fd = stream.fileno()
        self.text = ""

    def wait(self, token, timeout=30):
        """Wait for `token` to appear after what earlier waits consumed."""
        end = time.monotonic() + timeout
        while token not in self.text and time.monotonic() < end:
            r, _, _ = select.select([self.fd], [], [], 0.5)
            if r:
                self.text += os.read(self.fd, 65536).decode(errors="replace")
        assert token in self.text, self.text[-2000:]
        self.text = self.text[self.text.index(token) + len(token) :]


def mpremote(device, *args, timeout=60):
    proc = subprocess.run(
        [str(VENV_BIN / "mpremote"), "connect", str(device), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return proc


def test_mpremote_fs_exec_run_resets_and_mount(served, tmp_path):
    ready, flash, link, console = served
    assert os.path.realpath(link) == ready["pty"]
    local = tmp_path / "local.txt"
    local.write_text("from the host\n")

    p = mpremote(link, "fs", "cp", str(local), ":copied.txt")
    assert p.returncode == 0, p.stderr
    assert (flash / "copied.txt").read_text() == "from the host\n"

    p = mpremote(link, "fs", "ls")
    assert p.returncode == 0, p.stderr
    listing = {line.split()[-1]: int(line.split()[0]) for line in p.stdout.splitlines()[1:]}
    assert listing == {
        name: (flash / name).stat().st_size for name in ("boot.py", "main.py", "copied.txt")
    }

    # the flash is the board's "/": absolute names stay inside it, as on littlefs
    p = mpremote(
        link,
        "fs",
        "mkdir",
        ":/lib",
        "+",
        "fs",
        "cp",
        str(local),
        ":/lib/abs.txt",
        "+",
        "fs",
        "ls",
        ":/",
        "+",
        "exec",
        "import os; print('cwd', os.getcwd())",
    )
    assert p.returncode == 0, p.stderr
    assert (flash / "lib" / "abs.txt").read_text() == "from the host\n"
    assert "lib/" in p.stdout and "copied.txt" in p.stdout and "cwd /" in p.stdout
    assert "etc/" not in p.stdout and ".nvs" not in p.stdout

    p = mpremote(
        link, "exec", "import machine, binascii; print(binascii.hexlify(machine.unique_id()))"
    )
    assert p.returncode == 0, p.stderr
    assert "240ac4aabbcc" in p.stdout

    p = mpremote(link, "exec", "1/0")
    assert p.returncode == 1
    assert "ZeroDivisionError" in p.stdout + p.stderr

    script = tmp_path / "script.py"
    script.write_text("import os\nprint('ran', sorted(os.listdir()))\n")
    p = mpremote(link, "run", str(script))
    assert p.returncode == 0, p.stderr
    assert "ran ['boot.py', 'copied.txt', 'lib', 'main.py']" in p.stdout

    # soft-reset: the interpreter restarts (globals are gone), the chip is not reset; the
    # port's reset_cause() then says SOFT_RESET
    p = mpremote(
        link,
        "exec",
        "x = 42",
        "soft-reset",
        "exec",
        "import machine; print('x' in globals(), machine.reset_cause())",
    )
    assert p.returncode == 0, p.stderr
    assert "False 5" in p.stdout

    # reset: machine.reset(), the chip restarts (esp_restart: HARD_RESET afterwards)
    p = mpremote(link, "reset")
    assert p.returncode == 0, p.stderr
    console.wait("main.py running")  # the chip restarted and runs the firmware again
    # `resume`: mpremote's first raw REPL otherwise soft-resets, and SOFT_RESET would show
    p = mpremote(link, "resume", "exec", "import machine; print('cause', machine.reset_cause())")
    assert p.returncode == 0, p.stderr
    assert "cause 2" in p.stdout

    mounted = tmp_path / "mnt"
    mounted.mkdir()
    (mounted / "hostmod.py").write_text("VALUE = 'imported from the host'\n")
    p = mpremote(
        link,
        "mount",
        str(mounted),
        "exec",
        "import os, hostmod; print(os.getcwd(), hostmod.VALUE)",
    )
    assert p.returncode == 0, p.stderr
    assert "/remote imported from the host" in p.stdout

    # the same line over socket://
    p = mpremote(ready["socket"], "exec", "print(6 * 7)")
    assert p.returncode == 0, p.stderr
    assert "42" in p.stdout


def test_mpremote_repl_interrupts_main_and_runs_lines(served):
    ready, flash, link, console = served
    # the firmware's main.py is running: mpremote's repl gets the prompt with Ctrl-C
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [str(VENV_BIN / "mpremote"), "connect", str(link), "repl"],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        close_fds=True,
    )
    seen = b""

    def until(token, timeout=20):
        nonlocal seen
        end = time.monotonic() + timeout
        while token not in seen and time.monotonic() < end:
            r, _, _ = select.select([master], [], [], 0.2)
            if r:
                try:
                    seen += os.read(master, 4096)
                except OSError:
                    break
        return token in seen

    try:
        assert until(b"Use Ctrl-]")
        # type only once mpremote has put its terminal in raw mode (before that the tty
        # itself would turn Ctrl-C into a signal for mpremote)
        end = time.monotonic() + 20
        while termios.tcgetattr(slave)[3] & termios.ECHO and time.monotonic() < end:
            time.sleep(0.01)
        os.write(master, b"\x03")
        assert until(b"KeyboardInterrupt"), seen
        assert until(b">>> ")
        os.write(master, b"print(6 * 7)\r")
        assert until(b"42\r\n")
        os.write(master, b"for i in range(2):\r    print('line', i)\r\r")
        assert until(b"line 1")
        os.write(master, b"\x04")  # Ctrl-D: soft reboot, boot.py and main.py run again
        assert until(b"soft reboot")
        assert until(b"main.py running")
        os.write(master, b"\x1d")  # Ctrl-]: leave mpremote
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
        os.close(slave)
    assert proc.returncode == 0

# A virtual board's VM runs in a process session of its own (Ctrl-C on the host's terminal is not
# the board's), so no signal from a dying host reaches it. It must still power off by itself when
# its host goes: before, a test run killed by a timeout left its boards running for hours.
import os
import signal
import subprocess
import sys
import time

from host_tools.paths import ROOT

HOST = """
import sys, time
from host_tools.emulator.board import VirtualBoard
b = VirtualBoard(sys.argv[1], mac="24:0a:c4:00:0e:01", runtime="micropython")
(b.flash / "main.py").write_text(
    "import time\\nprint('looping')\\nwhile True:\\n    time.sleep_ms(200)\\n"
)
b.start()
b.wait_for(r"^looping", timeout=60)
print(b._core.proc.pid, flush=True)
time.sleep(600)
"""


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is gone as far as the board goes
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


def test_board_powers_off_when_its_host_is_killed(tmp_path, micropython):
    host = subprocess.Popen(
        [sys.executable, "-c", HOST, str(tmp_path / "flash")],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = host.stdout.readline()
        assert line.strip().isdigit(), f"the host did not start its board: {line!r}"
        vm = int(line)
        assert alive(vm)
    finally:
        host.send_signal(signal.SIGKILL)
        host.wait(timeout=30)
    deadline = time.monotonic() + 60
    while alive(vm) and time.monotonic() < deadline:
        time.sleep(0.1)
    if alive(vm):
        os.kill(vm, signal.SIGKILL)
        raise AssertionError("the board's VM ran on after its host was killed")

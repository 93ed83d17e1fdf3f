# Faults over time (Wi-Fi flapping, timed power cut, EN reset) and `zeroburn board run`.
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.emulator.test_shims import results

VENV_BIN = Path(sys.executable).parent


def test_wifi_flapping_is_seen_and_bounded(runtime, make_board):
    b = make_board(
        runtime,
        """
import network, time
w = network.WLAN(network.STA_IF)
w.active(True)
w.connect("lab", "pw")
last = None
changes = 0
while True:
    up = w.isconnected()
    if up != last:
        changes += 1
        print("R link", changes, up)
        last = up
    time.sleep_ms(20)
""",
    )
    b.start()
    b.wait_for("R link 2 True", 20)
    # up long enough for the driver's re-association (the station reconnects by itself)
    b.wifi_flap(down_s=0.3, up_s=1.0, count=2)
    b.wait_for("R link 6 True", 20)  # down, up, down, up: two flaps, then it stays up
    assert b.count(r"R link \d+ False") == 3  # the first line is the initial "not yet"


def test_timed_power_cut_and_en_reset(runtime, make_board):
    b = make_board(
        runtime,
        """
import machine, time
c = machine.reset_cause()
r = machine.RTC()
print("R boot", c, bytes(r.memory()))
r.memory(b"survives EN")
print("R written")
while True:
    time.sleep_ms(50)
""",
    )
    b.start()
    b.wait_for("R written", 20)  # the reset comes after the write, not between print and write
    b.reset()
    # EN: the port reports ESP_RST_POWERON as PWRON_RESET, yet RTC memory is kept
    b.wait_for("R boot 1 b'survives EN'", 20)
    b.power_cut(at=0.2)
    b.wait_for(r"\[board\] power cut", 20)
    b.wait_for("R boot 1 b''", 20, start=b.lines.index("[board] power cut"))
    assert b.reset_causes == [1, 1, 1]


FAKE_FIRMWARE = """
import time
for n in range(1, 4):
    time.sleep_ms(50)
    print("[tel] acked #%d" % n)
while True:
    time.sleep_ms(100)
"""


def _fake_flash(tmp_path):
    # a stand-in for installed firmware that reports three acknowledged messages
    flash = tmp_path / "flash"
    (flash / "lib" / "zeroburn").mkdir(parents=True)
    (flash / "main.py").write_text(textwrap.dedent(FAKE_FIRMWARE))
    (flash / "lib" / "zeroburn" / "app.py").write_text("")
    (flash / "lib" / "zeroburn" / "app.mpy").write_text("")
    (flash / "config.json").write_text("{}")
    return flash


def test_board_run_exits_0_once_n_messages_are_acknowledged(runtime, tmp_path):
    flash = _fake_flash(tmp_path)
    p = subprocess.run(
        [
            str(VENV_BIN / "zeroburn"),
            "board",
            "run",
            "--flash",
            str(flash),
            "--runtime",
            runtime,
            "--until-messages",
            "3",
            "--timeout",
            "60",
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert p.returncode == 0, p.stderr
    assert "[tel] acked #3" in p.stdout  # the console is streamed


def test_board_run_says_why_it_gave_up(runtime, tmp_path):
    flash = _fake_flash(tmp_path)
    p = subprocess.run(
        [
            str(VENV_BIN / "zeroburn"),
            "board",
            "run",
            "--flash",
            str(flash),
            "--runtime",
            runtime,
            "--until-messages",
            "5",
            "--timeout",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert p.returncode == 1
    assert "timed out after 2s with 3 of 5 messages acknowledged" in p.stderr
    assert p.stderr.startswith("zeroburn: board 24:0a:c4:")


def test_board_run_refuses_bad_arguments(tmp_path):
    flash = tmp_path / "empty"
    for args, message in (
        ([], "has no config.json"),
        (["--mac", "nonsense"], "must be 6 bytes in hex"),
        (["--heap", "12"], "must be a size like 48K"),
        # with --platform, a --config is the user's own, its endpoint replaced: it must exist
        (["--config", "x.json", "--platform", "p"], "x.json does not exist"),
        (["--ca", "x.pem"], "--ca goes with --config"),
    ):
        p = subprocess.run(
            [str(VENV_BIN / "zeroburn"), "board", "run", "--flash", str(flash), *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert p.returncode == 1, args
        assert message in p.stderr, (args, p.stderr)
    assert results  # shared helper stays importable for the other modules


def test_board_run_injects_faults_from_the_command_line(runtime, tmp_path):
    flash = _fake_flash(tmp_path)
    # acknowledges only after an EN reset (RTC memory kept, unlike at power-on): exit 0
    # proves --fault reset@... happened
    (flash / "main.py").write_text(
        "import machine, time\n"
        "r = machine.RTC()\n"
        "if r.memory() == b'before EN':\n"
        "    print('[tel] acked #1')\n"
        "r.memory(b'before EN')\n"
        "while True:\n"
        "    time.sleep_ms(100)\n"
    )
    p = subprocess.run(
        [
            str(VENV_BIN / "zeroburn"),
            "board",
            "run",
            "--flash",
            str(flash),
            "--runtime",
            runtime,
            "--fault",
            "reset@0.3",
            "--until-messages",
            "1",
            "--timeout",
            "60",
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert p.returncode == 0, p.stderr
    assert "rst:0x1 (POWERON_RESET)" in p.stdout
    p = subprocess.run(
        [
            str(VENV_BIN / "zeroburn"),
            "board",
            "run",
            "--flash",
            str(flash),
            "--fault",
            "meltdown@1",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 1
    assert "use NAME@SECONDS[=VALUE]" in p.stderr

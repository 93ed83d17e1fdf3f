# `zeroburn fleet`: a few virtual boards (CPython runtime, one process) against the platform
# emulator; every acknowledged message is found in the platform's SQLite.
import json
import subprocess
import sys

from host_tools.paths import ROOT


def test_fleet_three_cpython_boards(tmp_path):
    out = tmp_path / "fleet.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "host_tools.cli",
            "fleet",
            "--devices",
            "3",
            "--messages",
            "2",
            "--runtime",
            "cpython",
            "--platform",
            str(tmp_path / "platform"),
            "--json",
            str(out),
            "--timeout",
            "90",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=150,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    s = json.loads(out.read_text())
    assert s["devices"] == 3 and s["registered"] == 3 and s["online"] == 3
    assert s["complete"] is True
    assert s["acked"] >= 6
    assert s["messages_lost"] == 0
    assert s["stored"] >= s["acked"]  # the platform holds every acknowledged message
    assert s["boot_to_first_ack_ms"]["n"] == 3
    assert "fleet: registered" in proc.stderr  # the live progress line
    assert "messages lost: 0" in proc.stdout


def test_console_tally_counts_errors_of_the_run_not_of_the_power_off():
    from host_tools.load.fleet import BoardStats

    st = BoardStats(0, "02:00:00:00:00:01")
    st(b"[mqtt] online as 020000000001\r\n[tel] acked #1\n[net] W: OSError (110,)\n")
    st.stopping = True  # the run is over: its boards are powered off, their sockets closed
    st(b"[net] W: OSError (104,)\n[tel] acked #2\n")
    assert st.errors == {"net: OSError": 1}
    assert st.acked == [1, 2]  # an acknowledgement is one still

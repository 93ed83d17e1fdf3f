# The unchanged firmware on a virtual board against the platform emulator, both runtimes: the
# build's staging, the host map (Aliyun name -> loopback), verified TLS, NVS across power cuts,
# and `zeroburn board run --platform` counting what the platform stored.
import json
import subprocess
import sys
from pathlib import Path

import pytest

from host_tools.build.config_cmd import platform_config
from host_tools.emulator import VirtualBoard
from host_tools.platform.testing import running_platform

VENV_BIN = Path(sys.executable).parent
# The firmware's own heap budget is the firmware issue's business (measured here: the cycle
# needs about 64K of VM heap today); these tests are about the board, so they give it room.
HEAP = "96K"


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    with running_platform(tmp_path_factory.mktemp("platform"), linger_s=1) as plat:
        yield plat


def test_first_boot_registers_and_a_power_cut_keeps_the_token(runtime, platform, tmp_path):
    pk, _ = platform.add_product()
    cfg = platform_config(platform.state_dir, pk, port=platform.mqtts_port, interval_s=1)
    with VirtualBoard(tmp_path / "flash", runtime=runtime, heap=HEAP) as b:
        staged = b.install(config=cfg, ca_pem=platform.ca_path)
        assert "config.json" in staged and "ca.pem" in staged
        assert any(p.endswith(".mpy" if runtime == "micropython" else "app.py") for p in staged)
        b.start()
        phases = []
        for line in b.follow(timeout=60):  # the console as it comes, phase by phase
            phases.append(line.split("]")[0] + "]" if line.startswith("[") else line)
            if "[tel] acked #1" in line:
                break
        assert ["[reg]", "[mqtt]", "[tel]"] == [
            p for p in dict.fromkeys(phases) if p in ("[reg]", "[mqtt]", "[tel]")
        ]
        dn = b.mac.replace(":", "")
        assert b.count(r"\[reg\] registered as " + dn) == 1
        cut = len(b.lines)
        b.power_cut()
        b.wait_for(r"\[tel\] acked #1", 60, start=cut)
        # logged straight in with the token kept in NVS: no second registration
        assert b.count(r"\[reg\] registering") == 1
        assert (b.flash / ".nvs" / "zeroburn").is_dir()
        assert b.reset_causes == [1, 1]
    stored = platform.registry.messages(device_name=dn, product_key=pk)
    assert len([m for m in stored if m["topic"] == f"/{pk}/{dn}/user/update"]) >= 2


def test_board_run_exits_once_the_platform_stored_n_messages(runtime, platform, tmp_path):
    pk, _ = platform.add_product()
    p = subprocess.run(
        [
            str(VENV_BIN / "zeroburn"),
            "board",
            "run",
            "--flash",
            str(tmp_path / "flash"),
            "--runtime",
            runtime,
            "--heap",
            HEAP,
            "--platform",
            str(platform.state_dir),
            "--platform-port",
            str(platform.mqtts_port),
            "--product-key",
            pk,
            "--until-messages",
            "2",
            "--timeout",
            "90",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr
    assert "[reg] registered as" in p.stdout
    dn = p.stdout.split("[reg] registered as ")[1].split()[0]
    stored = platform.registry.messages(device_name=dn, product_key=pk)
    assert len([m for m in stored if m["topic"].endswith("/user/update")]) >= 2


def test_board_run_with_a_wrong_product_secret_gives_up_with_the_reason(
    platform, tmp_path, micropython
):
    pk, _ = platform.add_product()
    p = subprocess.run(
        [
            str(VENV_BIN / "zeroburn"),
            "board",
            "run",
            "--flash",
            str(tmp_path / "flash"),
            "--heap",
            HEAP,
            "--platform",
            str(platform.state_dir),
            "--platform-port",
            str(platform.mqtts_port),
            "--product-key",
            pk,
            "--product-secret",
            "0" * 16,
            "--until-messages",
            "1",
            "--timeout",
            "600",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 1
    # the refusal ends the run with the firmware's reason, as `zeroburn flash` does (the
    # firmware would now wait minutes before trying again), not after the whole --timeout
    assert "registration failed (refused, CONNACK 4)" in p.stderr
    assert "0" * 16 not in p.stdout + p.stderr  # the secret never reaches the console


def test_board_run_holds_an_analog_input_from_the_command_line(platform, tmp_path, micropython):
    pk, _ = platform.add_product()
    app = tmp_path / "app"
    app.mkdir()
    (app / "main.py").write_text(
        "import machine\n"
        "from zeroburn import app\n"
        "adc = machine.ADC(machine.Pin(34), atten=machine.ADC.ATTN_11DB)\n"
        "app.main(sensors=lambda: {'raw': adc.read()})\n"
    )
    cmd = [str(VENV_BIN / "zeroburn"), "board", "run", "--flash", str(tmp_path / "flash")]
    cmd += ["--app", str(app), "--heap", HEAP, "--platform", str(platform.state_dir)]
    cmd += ["--platform-port", str(platform.mqtts_port), "--product-key", pk]
    p = subprocess.run([*cmd, "--adc", "34=70000"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and "--adc '34=70000': use GPIO=U16" in p.stderr
    assert not (tmp_path / "flash").exists()  # refused before anything was written
    p = subprocess.run(
        [*cmd, "--adc", "34=40000", "--until-messages", "1", "--timeout", "90"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr
    dn = p.stdout.split("[reg] registered as ")[1].split()[0]
    stored = platform.registry.messages(device_name=dn, product_key=pk)
    ups = [m for m in stored if m["topic"].endswith("/user/update")]
    got = [json.loads(m["payload"])["sensors"] for m in ups]
    assert got and all(s == {"raw": 2500} for s in got), got  # 40000 >> 4: the top 12 bits

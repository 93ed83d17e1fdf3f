# `zeroburn flash` and `zeroburn info` against a virtual board over its pty with the real
# mpremote, the board then registering with the platform emulator over real TLS.
import hashlib
import json
import os
import pty
import re
import select
import subprocess
import sys
import termios
import time
from pathlib import Path

from host_tools.build import cabundle, staging
from host_tools.build.config_cmd import platform_config
from tests.flash.conftest import DN, registrations, snapshot, zeroburn


def wait_registrations(plat, pk, want, timeout=15):
    """The platform writes in batches: poll its state (bounded) until the count is reached."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        n = registrations(plat, pk, DN)
        if n >= want:
            return n
        time.sleep(0.1)
    return registrations(plat, pk, DN)


def stored_token(flash):
    """The device token as the board stored it (virtual NVS), to prove no output shows it."""
    blob = (flash / ".nvs" / "zeroburn" / "cred").read_bytes()
    m = re.search(rb'"tok": "([^"]+)"', blob)
    return m.group(1).decode() if m else None


def flash_json(link, cfg, ca, *extra):
    p = zeroburn(
        "flash", "--device", link, "--board", "virtual", "--config", cfg, "--ca", ca,
        "--timeout", "60", "--json", *extra,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout), p


def test_flash_info_reflash_and_wipe(served, platform, tmp_path):
    link, flash = served
    plat, pk, ps = platform
    cfg = tmp_path / "dev.config.json"
    cfg.write_text(json.dumps(platform_config(plat.state_dir, pk, port=plat.mqtts_port)))

    # 1. fresh board: every staged file copied, verified, and it registers and reports
    first, p = flash_json(link, cfg, plat.ca_path)
    expected = staging.stage(
        tmp_path / "expected",
        board="virtual",
        config={**json.loads(cfg.read_text()), "safe_mode_pin": 0},
        # the bundle goes over canonicalized: certificates only, one comment line each
        ca_pem=cabundle.to_pem(cabundle.certificates(Path(plat.ca_path).read_text())),
    )
    assert sorted(first["copied"]) == sorted(expected)
    assert first["unchanged"] == []
    for rel, digest in expected.items():
        assert hashlib.sha256((flash / rel).read_bytes()).hexdigest() == digest, rel
    assert first["device_name"] == DN
    assert first["registered"] == DN and first["online"] == DN and first["acked"] >= 1
    assert "[reg] registered as " + DN in p.stderr  # the console, followed on stderr
    assert wait_registrations(plat, pk, 1) == 1
    token = stored_token(flash)
    assert token

    # 2. info: deviceName, firmware, credentials held, never the token
    p = zeroburn("info", "--device", link, "--json")
    assert p.returncode == 0, p.stderr
    info = json.loads(p.stdout)
    assert info["device_name"] == DN and info["uid"] == DN
    assert info["fw"] == "0.1.0"
    assert info["credentials"] == {"has": True, "regs": 1, "pk": pk, "dn": DN}
    text = zeroburn("info", "--device", link)
    assert text.returncode == 0, text.stderr
    assert re.search(r"credentials\s+token stored for " + DN, text.stdout)
    for out in (p.stdout + p.stderr, text.stdout + text.stderr):
        assert token not in out and ps not in out

    # 3. re-flash with nothing changed: nothing copied, the stored token is used
    again, p = flash_json(link, cfg, plat.ca_path)
    assert again["copied"] == [] and again["removed"] == []
    assert sorted(again["unchanged"]) == sorted(expected)
    assert again["token_loaded"] == DN and again["registered"] is None
    assert again["acked"] >= 1
    assert registrations(plat, pk, DN) == 1
    assert token not in p.stdout + p.stderr and ps not in p.stdout + p.stderr

    # 4. a changed setting plus a stale module: only config.json goes over, the stale file
    # goes away; --wipe-credentials makes the board register exactly once more
    stale = flash / "lib" / "zeroburn" / "old_module.py"
    stale.write_text("X = 1\n")
    # and a copy at the root, where builds before /lib put the library: it would shadow /lib
    legacy = flash / "zeroburn" / "app.py"
    legacy.parent.mkdir()
    legacy.write_text("raise ImportError('the old layout')\n")
    # and a version an update over the air installed: the flashed version wins over it
    ota = flash / "zb" / "0.9.0" / "zeroburn" / "app.py"
    ota.parent.mkdir(parents=True)
    ota.write_text("raise ImportError('the OTA version')\n")
    (flash / "zb" / "active.json").write_text('{"v": "0.9.0", "b": ""}')
    cfg.write_text(json.dumps({**json.loads(cfg.read_text()), "interval_s": 7}))
    wiped, p = flash_json(link, cfg, plat.ca_path, "--wipe-credentials")
    assert not (flash / "zb" / "active.json").exists()
    assert wiped["copied"] == ["config.json"]
    assert wiped["removed"] == ["lib/zeroburn/old_module.py", "zeroburn/app.py"]
    assert not stale.exists() and not legacy.parent.exists()  # no empty namespace folder
    assert wiped["credentials_wiped"] is True
    assert wiped["registered"] == DN and wiped["acked"] >= 1
    assert wait_registrations(plat, pk, 2) == 2
    assert json.loads((flash / "config.json").read_text())["interval_s"] == 7
    info = json.loads(zeroburn("info", "--device", link, "--json").stdout)
    assert info["credentials"]["regs"] == 2 and info["credentials"]["has"] is True
    assert stored_token(flash) != token


def test_bad_configs_touch_nothing(served, tmp_path):
    link, flash = served
    before = snapshot(flash)
    good = {"product_key": "a1B2C3D4E5F", "product_secret": "0123456789abcdef",
            "region": "cn-shanghai", "wifi_ssid": "lab"}  # fmt: skip
    cases = [
        ({**good, "product_key": "a1B2-C3"}, "product_key may contain letters, digits"),
        ({k: v for k, v in good.items() if k != "product_secret"}, "ZEROBURN_PRODUCT_SECRET"),
        ({k: v for k, v in good.items() if k != "region"}, "set one of region"),
        ({**good, "signmethod": "hmacsha512"}, "signmethod must be one of"),
        ({**good, "keepalive_s": 5}, "keepalive_s must be between 30 and 1200"),
        ({**good, "wifi_sid": "typo"}, "unknown key 'wifi_sid'"),
    ]
    for i, (cfg, message) in enumerate(cases):
        path = tmp_path / f"bad{i}.config.json"
        path.write_text(json.dumps(cfg))
        p = zeroburn("flash", "--device", link, "--board", "virtual", "--config", path)
        assert p.returncode == 1, (cfg, p.stdout)
        assert message in p.stderr, (message, p.stderr)
        # refused before the board was touched (the list of known keys names connect_s)
        assert "connect" not in p.stderr.split("(known:")[0]
    broken = tmp_path / "broken.config.json"
    broken.write_text('{"product_key": "a1B2C3D4E5F",')
    p = zeroburn("flash", "--device", link, "--board", "virtual", "--config", broken)
    assert p.returncode == 1 and "is not valid JSON" in p.stderr
    p = zeroburn("flash", "--device", link, "--board", "esp32-nano", "--config", broken)
    assert p.returncode == 1 and "unknown board 'esp32-nano'" in p.stderr
    assert snapshot(flash) == before
    # the board was left running its stock main.py the whole time
    p = zeroburn("info", "--device", link, "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["fw"] is None


def test_flash_without_follow_then_refuses_a_bad_ca(served, tmp_path):
    """--no-follow copies and resets; the default CA is Aliyun's pinned roots; a file that is
    not a PEM bundle is refused before the board is touched."""
    link, flash = served
    cfg = tmp_path / "dev.config.json"
    cfg.write_text(
        json.dumps({"product_key": "a1B2C3D4E5F", "region": "cn-shanghai", "wifi_ssid": "lab"})
    )
    env = {"ZEROBURN_PRODUCT_SECRET": "0123456789abcdef"}
    p = zeroburn(
        "flash", "--device", link, "--board", "virtual", "--config", cfg, "--no-follow",
        "--json", env=env,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert "GlobalSign Root CA" in p.stderr and "expires on 2028-01-28" in p.stderr
    on_board = (flash / "ca.pem").read_text()
    assert "Aliyun IoT Root CA" in on_board and on_board.count("BEGIN CERTIFICATE") == 5
    # the secret came from the environment and went to the board, not to the output
    assert json.loads((flash / "config.json").read_text())["product_secret"] == "0123456789abcdef"
    assert "0123456789abcdef" not in p.stdout + p.stderr
    before = snapshot(flash)
    bad = tmp_path / "not-a-bundle.pem"
    bad.write_text("hello\n")
    p = zeroburn(
        "flash", "--device", link, "--board", "virtual", "--config", cfg, "--ca", bad, env=env
    )
    assert p.returncode == 1 and "holds no PEM certificate" in p.stderr
    assert snapshot(flash) == before


def test_repl_is_mpremotes_repl(served):
    """`zeroburn repl` hands the terminal to mpremote's REPL: Ctrl-C stops main.py, an
    expression is evaluated on the board, Ctrl-] leaves."""
    link, _flash = served
    controller, terminal = pty.openpty()
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "zeroburn"), "repl", "--device", str(link)],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
    )
    os.close(terminal)
    seen = b""

    def read_until(marker, timeout=20):
        nonlocal seen
        end = time.monotonic() + timeout
        while marker not in seen and time.monotonic() < end:
            r, _, _ = select.select([controller], [], [], 0.2)
            if r:
                try:
                    seen += os.read(controller, 4096)
                except OSError:
                    break
        return marker in seen

    try:
        assert read_until(b"Use Ctrl-] or Ctrl-x to exit this shell"), seen
        # mpremote puts the terminal in raw mode after its banner; a Ctrl-C sent before that
        # would be eaten by the line discipline
        end = time.monotonic() + 20
        while termios.tcgetattr(controller)[3] & termios.ICANON and time.monotonic() < end:
            time.sleep(0.05)
        os.write(controller, b"\x03")
        assert read_until(b">>> "), seen
        os.write(controller, b"print(6 * 7 + 10000)\r")
        assert read_until(b"10042"), seen
        os.write(controller, b"\x1d")
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(controller)

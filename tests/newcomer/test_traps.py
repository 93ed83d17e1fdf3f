# The traps a new user fell into (issue 15), one test each, through the real command line.
import json
import re
import signal
import subprocess
import time

from host_tools.build.config_cmd import platform_config
from host_tools.build.markers import Console
from host_tools.paths import ROOT
from host_tools.platform.server import Platform
from host_tools.platform.statelock import StateBusy
from host_tools.platform.testing import (
    Client,
    client_context,
    connwl_login,
    regnwl_login,
    running_platform,
)
from tests.newcomer.helpers import popen, wait_output, zeroburn

MAC = "24:0a:c4:00:bb:01"


def write_config(tmp_path, plat, pk, **changes):
    cfg = platform_config(plat.state_dir, pk, port=plat.mqtts_port, interval_s=1)
    cfg.update(changes)
    cfg = {k: v for k, v in cfg.items() if v is not None}
    path = tmp_path / "my.config.json"
    path.write_text(json.dumps(cfg))
    return path


# ---- zeroburn on PATH ------------------------------------------------------------------------


def test_make_setup_says_how_to_get_zeroburn_on_path():
    p = subprocess.run(
        ["make", "-s", "setup"], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert p.returncode == 0, p.stderr
    assert ". .venv/bin/activate" in p.stdout
    p = subprocess.run(
        ["bash", "-c", ". .venv/bin/activate && zeroburn --version"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0 and p.stdout.startswith("zeroburn "), p.stderr


# ---- board run ---------------------------------------------------------------------------------


def test_board_run_config_needs_a_ca_and_takes_one(tmp_path, platform):
    plat, pk, ps = platform
    cfg = write_config(tmp_path, plat, pk)
    flash = tmp_path / "b"
    # no CA anywhere: said at once, instead of the firmware refusing and the run hanging
    p = zeroburn("board", "run", "--flash", flash, "--config", cfg, "--runtime", "cpython",
                 "--mac", MAC, timeout=120)  # fmt: skip
    assert p.returncode == 1 and "give --ca FILE" in p.stderr
    p = zeroburn("board", "run", "--flash", flash, "--config", cfg, "--ca", plat.ca_path,
                 "--runtime", "cpython", "--mac", MAC, "--until-messages", "1",
                 "--timeout", "90", timeout=150)  # fmt: skip
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr


def test_board_run_stops_when_the_firmware_stops(tmp_path, platform):
    plat, pk, ps = platform
    cfg = write_config(tmp_path, plat, pk)
    bad = tmp_path / "bad.pem"
    bad.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    # no --timeout: before, this ran until killed
    p = zeroburn("board", "run", "--flash", tmp_path / "b", "--config", cfg, "--ca", bad,
                 "--mac", MAC, timeout=120)  # fmt: skip
    assert p.returncode == 1, p.stdout + p.stderr
    assert "[cfg] E: /ca.pem" in p.stdout and "not starting" in p.stdout
    assert re.search(r"board 24:0a:c4:00:bb:01: cfg: /ca\.pem: .*not starting", p.stderr)
    # an application whose main.py simply returns: the run ends and says so
    app = tmp_path / "app"
    app.mkdir()
    (app / "main.py").write_text('print("done already")\n')
    p = zeroburn("board", "run", "--flash", tmp_path / "b", "--config", cfg, "--ca",
                 plat.ca_path, "--app", app, "--mac", MAC, timeout=120)  # fmt: skip
    assert p.returncode == 1 and "done already" in p.stdout
    assert "the firmware stopped (main.py returned to the REPL)" in p.stderr


def test_product_secret_from_the_environment_for_board_run_and_build(tmp_path, platform):
    plat, pk, ps = platform
    cfg = write_config(tmp_path, plat, pk, product_secret=None)
    assert "product_secret" not in cfg.read_text()
    out = tmp_path / "out"
    p = zeroburn("build", "--out", out, "--config", cfg, ZEROBURN_PRODUCT_SECRET=ps)
    assert p.returncode == 0, p.stderr
    assert json.loads((out / "config.json").read_text())["product_secret"] == ps
    p = zeroburn("build", "--out", tmp_path / "o2", "--config", cfg)
    assert p.returncode == 1 and "ZEROBURN_PRODUCT_SECRET" in p.stderr
    p = zeroburn("board", "run", "--flash", tmp_path / "b", "--config", cfg, "--ca",
                 plat.ca_path, "--runtime", "cpython", "--mac", MAC, "--until-messages", "1",
                 "--timeout", "90", timeout=150, ZEROBURN_PRODUCT_SECRET=ps)  # fmt: skip
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr


def test_board_run_with_a_wrong_secret_stops_early_with_the_reason(tmp_path, platform):
    plat, pk, ps = platform
    started = time.monotonic()
    p = zeroburn("board", "run", "--flash", tmp_path / "b", "--platform", plat.state_dir,
                 "--product-key", pk, "--product-secret", "wrong-secret",
                 "--platform-port", plat.mqtts_port, "--runtime", "cpython", "--mac", MAC,
                 "--until-messages", "1", "--timeout", "1000", timeout=300)  # fmt: skip
    assert p.returncode == 1
    assert "registration failed" in p.stderr and "product_secret" in p.stderr
    assert time.monotonic() - started < 300  # not the whole --timeout
    assert "wrong-secret" not in p.stdout + p.stderr


def test_real_aliyun_config_runs_against_the_local_platform(tmp_path, platform):
    plat, pk, ps = platform
    real = {
        "product_key": "a1RealPk001",
        "product_secret": "RealProductSecret1",
        "instance_id": "iot-06z00abc1234567",
        "port": 1883,
        "wifi_ssid": "office",
        "interval_s": 1,
        "device_name_prefix": "gh-",
    }
    path = tmp_path / "real.config.json"
    path.write_text(json.dumps(real))
    p = zeroburn("board", "run", "--flash", tmp_path / "b", "--config", path,
                 "--platform", plat.state_dir, "--platform-port", plat.mqtts_port,
                 "--runtime", "cpython", "--mac", MAC, "--until-messages", "1",
                 "--timeout", "90", timeout=150)  # fmt: skip
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr
    assert "product a1RealPk001 added to the local platform" in p.stderr
    assert f"endpoint cn-shanghai:{plat.mqtts_port}" in p.stderr
    assert "[reg] registered as gh-240ac400bb01" in p.stdout  # the user's own prefix stays
    assert "RealProductSecret1" not in p.stdout + p.stderr


def test_failed_board_run_leaves_no_control_folder(tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"product_key": "a", "product_secret": "b", "wifi_ssid": "c"}))
    p = zeroburn("board", "run", "--flash", tmp_path / "b", "--config", cfg, "--ca", cfg,
                 TMPDIR=str(tmp))  # fmt: skip
    assert p.returncode == 1 and "set one of region" in p.stderr
    # the board is made before staging fails (bad config is found by the staging step here)
    app = tmp_path / "app"
    app.mkdir()
    ok = tmp_path / "ok.json"
    ok.write_text(json.dumps({"product_key": "a", "product_secret": "b", "wifi_ssid": "c",
                              "region": "cn-shanghai"}))  # fmt: skip
    p = zeroburn("board", "run", "--flash", tmp_path / "b", "--config", ok, "--ca", cfg,
                 "--app", app, TMPDIR=str(tmp))  # fmt: skip
    assert p.returncode == 1 and "has no main.py" in p.stderr
    assert list(tmp.iterdir()) == []


# ---- the platform ------------------------------------------------------------------------------


def connect_device(plat, pk, ps, dn="esp32-0001"):
    with Client(plat.mqtts_port, client_context(plat.ca_path)) as c:
        assert c.connect(*regnwl_login(dn, pk, ps)) == 0
        reg = json.loads(c.message("/ext/regnwl").payload)
    dev = Client(plat.mqtt_port)
    assert dev.connect(*connwl_login(reg["clientId"], dn, pk, reg["deviceToken"])) == 0
    return dev


def online(state, dn="esp32-0001", timeout=15):
    end = time.monotonic() + timeout
    while True:
        p = zeroburn("platform", "devices", "--state", state, "--json")
        rows = json.loads(p.stdout) if p.returncode == 0 else []
        now = any(d["device_name"] == dn and d["online"] for d in rows)
        if now or time.monotonic() > end:
            return now
        time.sleep(0.2)


def test_second_serve_on_the_same_state_leaves_the_running_one_alone(tmp_path):
    state = tmp_path / "state"
    with running_platform(state) as plat:
        pk, ps = plat.registry.add_product()
        dev = connect_device(plat, pk, ps)
        try:
            assert online(state)
            p = zeroburn("platform", "serve", "--state", state, "--port", plat.mqtt_port,
                         "--tls-port", plat.mqtts_port, timeout=60)  # fmt: skip
            assert p.returncode == 1 and "another platform" in p.stderr
            assert online(state, timeout=0)  # its sessions are still there
            # `make demo` starts a Platform in-process: the same lock refuses it
            again = Platform(state)
            try:
                try:
                    again.start()
                    raise AssertionError("a second platform started on the same state")
                except StateBusy as e:
                    assert "another platform" in str(e)
            finally:
                again.registry.close()
            assert online(state, timeout=0)
        finally:
            dev.close()


def serve(state, *extra):
    proc = popen("platform", "serve", "--state", state, *extra)
    line = proc.stdout.readline()
    assert line, proc.stderr.read()
    return proc, json.loads(line)


def test_restarted_serve_listens_on_the_ports_it_had(tmp_path):
    state = tmp_path / "state"
    proc, first = serve(state, "--port", "0", "--tls-port", "0")
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    # a board configured now gets the port the restart will listen on
    p = zeroburn("platform", "product", "add", "--state", state, "--json")
    pk = json.loads(p.stdout)["productKey"]
    p = zeroburn("config", "init", "-o", tmp_path / "d.config.json", "--platform", state,
                 "--product-key", pk)  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert json.loads((tmp_path / "d.config.json").read_text())["port"] == first["mqtts"]
    proc, second = serve(state)
    try:
        assert (second["mqtt"], second["mqtts"]) == (first["mqtt"], first["mqtts"])
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)


def test_platform_tables_kinds_and_product_set(tmp_path):
    state = tmp_path / "state"
    with running_platform(state) as plat:
        pk, ps = plat.registry.add_product()
        connect_device(plat, pk, ps).close()
        time.sleep(0)  # the writer commits in batches: wait through the CLI below
        end = time.monotonic() + 15
        while True:
            p = zeroburn("platform", "events", "--state", state)
            if "login" in p.stdout or time.monotonic() > end:
                break
            time.sleep(0.2)
        assert p.stdout.splitlines()[0].split()[:3] == ["TIME", "(UTC)", "KIND"]
        p = zeroburn("platform", "devices", "--state", state)
        assert p.stdout.splitlines()[0].split()[:3] == ["PRODUCT", "DEVICE", "STATUS"]
        assert "esp32-0001" in p.stdout
        p = zeroburn("platform", "events", "--state", state, "--kind", "nonsense")
        assert p.returncode == 2 and "invalid choice: 'nonsense'" in p.stderr
        p = zeroburn("platform", "product", "set", pk, "--dynamic-registration", "off",
                     "--state", state)  # fmt: skip
        assert p.returncode == 0 and p.stdout.strip() == f"{pk}: dynamic registration off"


# ---- the virtual board's identity ---------------------------------------------------------------


def test_virtual_board_says_its_chip_and_the_chip_check_applies(tmp_path, platform, served):
    plat, pk, ps = platform
    link, flash = served
    p = zeroburn("info", "--device", link, "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["machine"].endswith(" with virtual")
    cfg = write_config(tmp_path, plat, pk)
    p = zeroburn("flash", "--device", link, "--board", "esp32-devkitc", "--config", cfg,
                 "--ca", plat.ca_path, "--timeout", "30")  # fmt: skip
    assert p.returncode == 1 and "not an esp32: pick the right --board" in p.stderr
    assert not (flash / "zeroburn").exists()  # nothing was copied


# ---- Ctrl-C ------------------------------------------------------------------------------------


def test_ctrl_c_in_flash_ends_the_line_and_says_to_run_it_again(tmp_path, platform, served):
    plat, pk, ps = platform
    link, flash = served
    cfg = write_config(tmp_path, plat, pk)
    args = ("flash", "--device", link, "--board", "virtual", "--config", cfg,
            "--ca", plat.ca_path, "--timeout", "60")  # fmt: skip
    proc = popen(*args)
    wait_output(proc, proc.stderr, "flash: copy lib/zeroburn/", timeout=120)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert "flash interrupted" in err and "run the same `zeroburn flash` again" in err
    p = zeroburn(*args)
    assert p.returncode == 0, p.stderr
    assert list(flash.rglob("*.zbnew")) == []


def test_ctrl_c_in_fleet_and_board_run(tmp_path):
    proc = popen("fleet", "--devices", "2", "--messages", "1000", "--runtime", "cpython")
    wait_output(proc, proc.stderr, "fleet", timeout=120)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert err.endswith("zeroburn: interrupted (Ctrl-C)\n"), err[-500:]


def test_ctrl_c_in_make_demo_prints_no_traceback():
    proc = subprocess.Popen(
        [str(ROOT / ".venv" / "bin" / "python"), "-m", "host_tools.emulator.demo"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_output(proc, proc.stdout, "boots with a fresh flash", timeout=120)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in out + err
    assert "interrupted" in out


# ---- install-micropython, --help, config check ------------------------------------------------


def test_install_micropython_on_a_missing_port(tmp_path):
    fw = tmp_path / "ESP32_GENERIC.bin"
    fw.write_bytes(bytes([0xE9]) + bytes(40))
    p = zeroburn("install-micropython", "--device", tmp_path / "ttyUSB9", "--board",
                 "esp32-devkitc", "--firmware", fw)  # fmt: skip
    assert p.returncode == 1
    assert "does not exist: is the board plugged in?" in p.stderr
    assert "hold BOOT" not in p.stderr and "esptool" not in p.stdout


def help_of(*command):
    """{option: its help text, unwrapped} from `zeroburn ... --help`."""
    p = zeroburn(*command, "--help")
    assert p.returncode == 0, p.stderr
    blocks, cur = {}, None
    for line in p.stdout.splitlines():
        m = re.match(r"^  (?:-\w, )?(--[\w-]+)(.*)$", line)
        if m:
            cur = m.group(1)
            blocks[cur] = m.group(2)
        elif cur and line.startswith("    "):
            blocks[cur] += " " + line.strip()
        else:
            cur = None
    return {k: " ".join(v.split()) for k, v in blocks.items()}


def test_help_texts_show_defaults_and_say_what_options_do():
    fleet = help_of("fleet")
    for opt, default in (("--messages", "5"), ("--interval", "1"), ("--runtime", "cpython")):
        assert f"default: {default}" in fleet[opt], fleet[opt]
    assert "default: 120" in help_of("flash")["--timeout"]
    serve = help_of("platform", "serve")
    assert "1883" in serve["--port"] and "8883" in serve["--tls-port"]
    assert "used last" in serve["--port"]
    assert "seconds" in serve["--linger"] and "(default: 15.0)" in serve["--linger"]
    assert "default: 460800" in help_of("install-micropython")["--baud"]
    assert "default 0" in help_of("board", "run")["--timeout"]
    add = help_of("platform", "product", "add")
    for opt in ("--product-key", "--product-secret", "--no-dynamic-registration"):
        assert len(add.get(opt, "")) > 10, (opt, add)
    p = zeroburn("platform", "device", "add", "--help")
    assert re.search(r"usage: .* --product PK", p.stdout) and "[--product PK]" not in p.stdout
    install = help_of("install-micropython")
    assert "virtual" not in install["--board"] + install["--device"]


def test_config_check_reports_every_problem(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"product_key": "a b", "port": 99999, "interval_s": "x",
                                "colour": 1, "region": "cn-shanghai"}))  # fmt: skip
    p = zeroburn("config", "check", path)
    assert p.returncode == 1
    for problem in (
        "unknown key 'colour'",
        "product_key may contain",
        "product_secret is required",
        "port must be between 1 and 65535",
        "wifi_ssid is required",
        "interval_s must be a whole number",
    ):
        assert problem in p.stderr, problem
    assert "6 problems" in p.stderr


def test_safe_mode_reason_has_no_stray_parenthesis():
    c = Console()
    c.feed("[boot] safe mode (file 'safemode'): application not started")
    assert c.failure.startswith("the board is in safe mode (file 'safemode'): remove the file")
    assert "started)" not in c.failure and "):" in c.failure
    c = Console()
    c.feed("[boot] safe mode (button held): application not started")
    assert (
        c.failure
        == "the board is in safe mode (button held): release the button and reset the board"
    )

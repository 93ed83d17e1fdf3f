# A user's own application, end to end: scaffold it, edit it, run it on a virtual board, flash
# it onto a virtual board over mpremote; the board runs their code, never the repo's main.py.
import json

from host_tools.build import staging
from host_tools.build.config_cmd import platform_config
from host_tools.paths import FIRMWARE
from tests.flash.conftest import DN
from tests.newcomer.helpers import platform_messages, zeroburn

MARK = "greenhouse_lux"


def make_app(tmp_path):
    app = tmp_path / "myapp"
    p = zeroburn("init-project", app)
    assert p.returncode == 0, p.stderr
    for name in ("main.py", "sensors.py", "README.md", "config.example.json", ".gitignore"):
        assert (app / name).is_file(), name
    # the user's edits: their own reading, a driver of their own, a line at boot
    sensors = (app / "sensors.py").read_text()
    assert '"count"' in sensors
    (app / "sensors.py").write_text(sensors.replace('"count"', f'"{MARK}"'))
    (app / "lib").mkdir()
    (app / "lib" / "luxmeter.py").write_text("def scale(n):\n    return n * 10\n")
    main = (app / "main.py").read_text()
    main = main.replace(
        "    from zeroburn import app",
        '    print("my greenhouse app")\n    from zeroburn import app',
    )
    (app / "main.py").write_text(main)
    (app / "notes.md").write_text("not for the board\n")
    (app / "config.json").write_text('{"product_secret": "never staged"}\n')
    return app


def test_user_application_scaffold_run_and_flash(tmp_path, platform, served, micropython):
    plat, pk, ps = platform
    app = make_app(tmp_path)

    # build: their files at the root, compiled like ours; notes and configs stay behind
    files = staging.plan(board="virtual", app=app)
    assert files["main.py"] == (app / "main.py").read_bytes()
    assert files["main.py"] != (FIRMWARE / "main.py").read_bytes()
    assert "sensors.mpy" in files and "lib/luxmeter.mpy" in files
    assert "notes.md" not in files and "config.json" not in files
    assert "lib/zeroburn/app.mpy" in files  # the firmware itself still comes with it

    # a virtual board runs it unchanged and the platform receives the user's sensor values
    flash = tmp_path / "board"
    p = zeroburn(
        "board", "run", "--flash", flash, "--app", app, "--platform", plat.state_dir,
        "--product-key", pk, "--platform-port", plat.mqtts_port,
        "--until-messages", "2", "--timeout", "120", "--mac", "24:0a:c4:00:aa:01",
    )  # fmt: skip
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr
    assert "my greenhouse app" in p.stdout
    assert (flash / "main.py").read_bytes() == (app / "main.py").read_bytes()
    msgs = platform_messages(plat.state_dir, "240ac400aa01")
    bodies = [json.loads(m["payload"]) for m in msgs if m["topic"].endswith("/user/update")]
    assert bodies and all(MARK in b["sensors"] for b in bodies), bodies

    # flash it onto a virtual board over its pty: the board boots the user's main.py
    link, board_flash = served
    cfg = tmp_path / "dev.config.json"
    cfg.write_text(json.dumps(platform_config(plat.state_dir, pk, port=plat.mqtts_port)))
    args = ("flash", "--device", link, "--board", "virtual", "--config", cfg,
            "--ca", plat.ca_path, "--app", app, "--timeout", "60")  # fmt: skip
    p = zeroburn(*args)
    assert p.returncode == 0, p.stderr
    assert "board| my greenhouse app" in p.stderr
    assert (board_flash / "main.py").read_bytes() == (app / "main.py").read_bytes()
    assert (board_flash / "sensors.mpy").exists() and (
        board_flash / "lib" / "luxmeter.mpy"
    ).exists()
    assert not (board_flash / "notes.md").exists()
    assert "flash: registered" not in p.stderr  # the step is "credentials" now
    assert "flash: credentials registered" in p.stderr
    assert f"{DN}: registered, online" in p.stdout

    # the user edits one file and flashes again: one file copied, said in the singular, and
    # the board logs in with its stored token (not "registered")
    (app / "main.py").write_text((app / "main.py").read_text().replace("greenhouse", "glasshouse"))
    p = zeroburn(*args)
    assert p.returncode == 0, p.stderr
    assert "copy 1 file\n" in p.stderr and "1 files" not in p.stderr + p.stdout
    assert "1 file copied" in p.stdout
    assert "board| my glasshouse app" in p.stderr
    assert "flash: credentials stored token loaded" in p.stderr
    assert "logged in with its stored token" in p.stdout


def test_app_folder_mistakes_are_refused_before_anything_is_written(tmp_path):
    app = tmp_path / "app"
    app.mkdir()
    out = tmp_path / "out"
    p = zeroburn("build", "--out", out, "--app", app)
    assert p.returncode == 1 and "has no main.py" in p.stderr
    (app / "main.py").write_text("print(1)\n")
    (app / "zeroburn").mkdir()
    (app / "zeroburn" / "app.py").write_text("# mine\n")
    p = zeroburn("build", "--out", out, "--app", app)
    assert p.returncode == 1 and "zeroburn/app.py would replace zeroburn's own" in p.stderr
    assert not out.exists()
    (app / "zeroburn" / "app.py").unlink()
    (app / "zeroburn").rmdir()
    # modules that would be imported in place of the firmware's or the OTA loader's
    for name in ("otaboot.py", "lib/otaboot.mpy", "zeroburn.py", "lib/umqtt.py", "zb/x.py"):
        (app / name).parent.mkdir(parents=True, exist_ok=True)
        (app / name).write_text("# mine\n")
        p = zeroburn("build", "--out", out, "--app", app)
        assert p.returncode == 1 and name in p.stderr and "zeroburn's own" in p.stderr, name
        assert not out.exists()
        (app / name).unlink()
    # two files that become one module
    (app / "lib" / "drv.py").write_text("X = 1\n")
    (app / "lib" / "drv.mpy").write_bytes(b"M")
    p = zeroburn("build", "--out", out, "--app", app)
    assert p.returncode == 1 and "lib/drv.mpy and lib/drv.py are the same module" in p.stderr
    assert not out.exists()
    (app / "lib" / "drv.mpy").unlink()
    p = zeroburn("build", "--out", out, "--app", tmp_path / "nope")
    assert p.returncode == 1 and "init-project" in p.stderr
    # init-project never overwrites the user's work
    p = zeroburn("init-project", app)
    assert p.returncode == 1 and "main.py" in p.stderr
    assert (app / "main.py").read_text() == "print(1)\n"


def test_fleet_runs_the_user_application(tmp_path):
    app = make_app(tmp_path)
    state = tmp_path / "fleet-platform"
    p = zeroburn("fleet", "--devices", "2", "--messages", "2", "--app", app, "--platform", state,
                 timeout=300)  # fmt: skip
    assert p.returncode == 0, p.stdout + p.stderr
    p = zeroburn("platform", "messages", "--state", state, "--json", "--limit", "0")
    bodies = [json.loads(m["payload"]) for m in json.loads(p.stdout)]
    bodies = [b for b in bodies if "uptime_s" in b]
    assert len(bodies) >= 4 and all(MARK in b["sensors"] for b in bodies), bodies

# An update carries the user's application (`zeroburn ota build --app DIR`): what goes in the
# package and what stays as flashed, through the real CLI, and end to end on a virtual board
# flashed with an application made by `zeroburn init-project`, updated through
# `zeroburn platform ota`.
import hashlib
import json
import tarfile

import pytest

from host_tools import cli
from host_tools.build import otapkg
from tests.ota.conftest import RUNTIMES, flash_digest, switch, wait_until

UP = 150  # seconds an upgrade may take on a loaded machine (two resets, one download)

SENSORS = """\
import sys

import luxmeter


def _data(path):
    with open(path) as f:
        return f.read().strip()


class Example:
    def __init__(self):
        self.count = 0

    def read(self):
        self.count += 1
        return {
            "count": self.count,
            "mark": "app-%(v)s",
            "lux": luxmeter.MARK,
            "data": _data(sys.path[0] + "/level.dat"),
            "root": _data("level.dat"),
        }
"""


def make_app(tmp_path, v, capsys=None):
    """An application folder made by `zeroburn init-project`, its sensors module reporting
    marker values of version v: from itself, from a lib/ module and from a data file."""
    app = tmp_path / f"app{v}"
    assert cli.main(["init-project", str(app)]) == 0
    if capsys:
        capsys.readouterr()
    assert "sensors.Example().read" in (app / "main.py").read_text()
    (app / "sensors.py").write_text(SENSORS % {"v": v})
    (app / "lib").mkdir()
    (app / "lib" / "luxmeter.py").write_text(f'MARK = "lux-{v}"\n')
    (app / "level.dat").write_text(f"level-{v}\n")
    (app / "notes.md").write_text("not for the board\n")
    (app / "config.json").write_text('{"product_secret": "never in a package"}\n')
    return app


def members(path):
    with tarfile.open(path) as tar:
        return {n: tar.extractfile(n).read() for n in tar.getnames()}


@pytest.mark.parametrize("runtime", ["micropython", "cpython"])
def test_ota_build_app_carries_its_modules_not_main_py(runtime, tmp_path, capsys):
    app = make_app(tmp_path, 2, capsys)
    (app / "boot.py").write_text("# the user's boot.py\n")
    out = tmp_path / "pkg.tar"
    argv = ["ota", "build", "--app", str(app), "--version", "0.2.0", "--out", str(out)]
    assert cli.main([*argv, "--runtime", runtime, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    files = members(out)
    ext = ".mpy" if runtime == "micropython" else ".py"
    # the user's modules laid out for the version folder (lib/ flattened), compiled like ours
    mine = {"sensors" + ext, "luxmeter" + ext, "level.dat"}
    assert mine <= set(files)
    assert files["level.dat"] == b"level-2\n"
    if runtime == "cpython":
        assert files["sensors.py"] == (app / "sensors.py").read_bytes()
    else:
        assert files["sensors.mpy"].startswith(b"M")  # mpy-cross output, not the source
    assert "zeroburn/app" + ext in files  # the firmware still comes with it
    # the loader entry, the user's boot.py, configs and notes: never in an update
    assert not {"main.py", "boot.py", "config.json", "notes.md", "README.md"} & set(files)
    assert not [n for n in files if n.startswith("lib/")]
    assert info["app"]["files"] == sorted(mine)
    assert info["app"]["not_updated"] == ["boot.py", "main.py"]
    assert info["app"]["data"] == ["level.dat"]
    assert any("main.py is not part of an update" in n for n in info["app"]["notes"])
    # the same in words
    assert cli.main([*argv, "--runtime", runtime]) == 0
    text = capsys.readouterr().out
    assert "main.py is not part of an update: it stays as flashed" in text
    assert "keep it to wiring and your code in modules" in text
    assert "open() by a relative path reads the copy flashed at the root" in text
    # without --app: the firmware only, nothing of the app
    assert not mine & set(otapkg.package_files(runtime=runtime))


def test_ota_build_app_refuses_what_cannot_be_a_version_folder(tmp_path, capsys):
    app = make_app(tmp_path, 2, capsys)
    out = tmp_path / "pkg.tar"
    argv = ["ota", "build", "--app", str(app), "--version", "0.2.0", "--out", str(out)]
    cases = [
        ("luxmeter.py", "lib/luxmeter.py would both be luxmeter.mpy"),  # lib/ is flattened
        ("sensors.mpy", "sensors.mpy and sensors.py are the same module on the board"),
        ("lib/sensors/__init__.py", "would both be module sensors"),
        ("luxmeter/x.dat", "lib/luxmeter.py and the folder of luxmeter/x.dat"),
        ("lib/otaboot.py", "lib/otaboot.py would shadow zeroburn's own module 'otaboot'"),
        ("lib/ca.pem", "lib/ca.pem would be ca.pem in an update's version folder, a name"),
        ("lib/creds.bin", "lib/creds.bin would be creds.bin"),
        ("lib/main.py", "lib/main.py would be main.mpy"),
        ("umqtt.py", "umqtt.py would shadow zeroburn's own module 'umqtt'"),
    ]
    for rel, why in cases:
        (app / rel).parent.mkdir(parents=True, exist_ok=True)
        (app / rel).write_bytes(b"x = 1\n")
        assert cli.main(argv) == 1, rel
        err = capsys.readouterr().err
        assert why in err, (rel, err)
        assert not out.exists() and not out.with_name("pkg.tar.tmp").exists()
        (app / rel).unlink()
    # the CPython runtime keeps sources: a .py and a .mpy are still one module
    (app / "sensors.mpy").write_bytes(b"M")
    assert cli.main([*argv, "--runtime", "cpython"]) == 1
    assert "sensors.mpy and sensors.py are the same module" in capsys.readouterr().err
    (app / "sensors.mpy").unlink()
    assert cli.main(argv) == 0  # the app itself is fine


def online(board, start=0, timeout=90):
    return board.wait_for(r"\[mqtt\] online as ", timeout=timeout, start=start)


def sensors_sent(plat, dn):
    """The "sensors" of every telemetry message the platform stored from the device."""
    plat.flush()
    out = []
    for m in plat.registry.messages(device_name=dn):
        if m["topic"].endswith("/user/update"):
            out.append(json.loads(m["payload"]).get("sensors") or {})
    return out


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_update_with_app_replaces_the_users_modules_on_the_board(
    runtime, tmp_path, plat, make_board, capsys
):
    v1, v2 = make_app(tmp_path, 1, capsys), make_app(tmp_path, 2, capsys)
    board = make_board(runtime, app=v1)
    dn = board.name
    old = {"mark": "app-1", "lux": "lux-1", "data": "level-1", "root": "level-1"}
    wait_until(
        lambda: [s for s in sensors_sent(plat, dn) if s.get("mark")], 90, "telemetry of app 1"
    )
    assert {k: sensors_sent(plat, dn)[-1][k] for k in old} == old
    before = flash_digest(board)  # config.json, ca.pem, boot.py, main.py and the token
    assert (board.flash / "main.py").read_bytes() == (v1 / "main.py").read_bytes()

    pkg = tmp_path / "app-0.2.0.tar"
    argv = ["ota", "build", "--app", str(v2), "--version", "0.2.0", "--out", str(pkg), "--json"]
    assert cli.main([*argv, "--runtime", runtime]) == 0
    assert json.loads(capsys.readouterr().out)["app"]["not_updated"] == ["main.py"]
    state = ["--state", str(plat.state_dir), "--json"]
    argv = ["platform", "ota", "add", str(pkg), "--product", plat.product_key]
    assert cli.main([*argv, "--version", "0.2.0", *state]) == 0
    package = json.loads(capsys.readouterr().out)
    assert package["sign"] == hashlib.sha256(pkg.read_bytes()).hexdigest()
    assert cli.main(["platform", "ota", "push", str(package["id"]), "--device", dn, *state]) == 0
    assert json.loads(capsys.readouterr().out)["devices"] == 1

    mark = len(board.lines)
    board.wait_for(r"\[ota\] 0\.2\.0 confirmed", timeout=UP, start=mark)
    new = {"mark": "app-2", "lux": "lux-2", "data": "level-2", "root": "level-1"}

    def updated():
        got = [s for s in sensors_sent(plat, dn) if s.get("mark") == "app-2"]
        return got and {k: got[-1].get(k) for k in new} == new

    wait_until(updated, 90, "telemetry of app 2")

    def status():
        assert cli.main(["platform", "ota", "status", *state]) == 0
        rows = json.loads(capsys.readouterr().out)
        return [r for r in rows if r["device_name"] == dn and r["state"] == "succeeded"]

    row = wait_until(status, 30, "the job done")[-1]
    assert row["version"] == "0.2.0" and row["target"] == "0.2.0"
    assert switch(board) == {"v": "0.2.0", "b": ""}
    folder = board.flash / "zb" / "0.2.0"
    ext = ".mpy" if runtime == "micropython" else ".py"
    assert (folder / f"sensors{ext}").is_file() and (folder / f"luxmeter{ext}").is_file()
    assert not (folder / "main.py").exists() and not (folder / "lib").exists()
    # the root's own files, the loader and the user's main.py, the token: as flashed
    assert flash_digest(board) == before
    assert (board.flash / "level.dat").read_text() == "level-1\n"
    console = "\n".join(board.lines)
    assert "MemoryError" not in console, console

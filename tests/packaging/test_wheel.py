# The installable CLI: a wheel built from the checkout holds the firmware, the board files and
# everything `zeroburn build` needs; installed into a fresh venv outside the repository it
# builds a board's files and runs a virtual board that registers with the platform.
import ast
import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile

import pytest

from host_tools import __version__
from host_tools.build import staging
from host_tools.paths import BUILD, FIRMWARE, ROOT, UMQTT_SIMPLE
from host_tools.platform.testing import running_platform

PY = sys.executable


def test_pyproject_lists_every_package_and_one_version():
    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(conf["tool"]["setuptools"]["packages"])
    found = {
        ".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "host_tools").rglob("*.py")
    }
    found = {f for f in found if "__pycache__" not in f}
    mapped = conf["tool"]["setuptools"]["package-dir"]
    assert found | set(mapped) == listed
    assert mapped == {
        "host_tools.firmware": "firmware",
        "host_tools.firmware.zeroburn": "firmware/zeroburn",
        "host_tools.boards": "boards",
    }
    assert conf["project"]["license"] == "MIT" and (ROOT / "LICENSE").is_file()
    assert "version" in conf["project"]["dynamic"]
    # the firmware's VERSION is the one source: CLI, wheel, manifest metadata, package.json
    tree = ast.parse((FIRMWARE / "zeroburn" / "__init__.py").read_text())
    values = {
        t.id: n.value
        for n in tree.body
        if isinstance(n, ast.Assign)
        for t in n.targets
        if isinstance(t, ast.Name)
    }
    assert values["VERSION"].value == __version__
    assert isinstance(values["__version__"], ast.Name) and values["__version__"].id == "VERSION"
    assert json.loads((ROOT / "package.json").read_text())["version"] == __version__
    assert f"## {__version__}" in (ROOT / "CHANGELOG.md").read_text()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    p = subprocess.run(
        [PY, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", out, ROOT],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr
    # setuptools warns about nothing of ours (license table, data folders as packages)
    assert "BuildBackendWarning" not in p.stderr, p.stderr
    (whl,) = out.glob("zeroburn-*.whl")
    return whl


def test_wheel_holds_what_build_needs(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for rel in ["manifest.py", "boot.py", "main.py"] + [
        f"zeroburn/{p.name}" for p in (FIRMWARE / "zeroburn").glob("*.py")
    ]:
        assert f"host_tools/firmware/{rel}" in names
    for p in (ROOT / "boards").iterdir():
        assert f"host_tools/boards/{p.name}" in names
    for p in (ROOT / "host_tools" / "emulator").glob("*/*.py"):
        assert p.relative_to(ROOT).as_posix() in names
    assert "host_tools/build/micropython-deps.toml" in names
    assert f"zeroburn-{__version__}.dist-info/licenses/LICENSE" in names
    assert not any(n.startswith(("tests/", "build/")) for n in names)


def test_installed_wheel_builds_and_runs_a_board_outside_the_repo(wheel, tmp_path, micropython):
    venv = tmp_path / "venv"
    subprocess.run([PY, "-m", "venv", venv], check=True, timeout=120)
    bin_ = venv / "bin"
    # dependencies by name from the package index pip is configured with (its cache makes it
    # quick); the wheel itself from the file just built
    p = subprocess.run(
        [bin_ / "python", "-m", "pip", "install", "-q", "--find-links", wheel.parent,
         f"zeroburn=={__version__}"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    work = tmp_path / "work"  # outside the repository: nothing of the checkout in reach
    work.mkdir()
    cache = tmp_path / "cache"
    # umqtt.simple is fetched on the first build; the tarball `make setup` downloaded is
    # offered as its cache (the build checks it against the pinned sha256 all the same)
    (cache / "cache").mkdir(parents=True)
    for tar in (BUILD / "cache").glob("micropython-umqtt.simple-*.tar.gz"):
        shutil.copy(tar, cache / "cache" / tar.name)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(ZEROBURN_CACHE=str(cache), PATH=f"{bin_}{os.pathsep}{env.get('PATH', '')}")

    def zb(*args, timeout=300):
        return subprocess.run(
            [bin_ / "zeroburn", *args], cwd=work, env=env, capture_output=True, text=True,
            timeout=timeout,
        )  # fmt: skip

    where = subprocess.run(
        [bin_ / "python", "-c", "import host_tools.paths as p; print(p.FIRMWARE, p.CHECKOUT)"],
        cwd=work, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert where.stdout.split() == [str(next(venv.glob("lib/python*/site-packages"))
                                        / "host_tools" / "firmware"), "False"]  # fmt: skip

    p = zb("--version")
    assert p.returncode == 0 and p.stdout.strip() == f"zeroburn {__version__}"

    p = zb("build", "--out", "staged", "--board", "esp32-devkitc")
    assert p.returncode == 0, p.stderr
    staged = {
        f.relative_to(work / "staged").as_posix(): f.read_bytes()
        for f in (work / "staged").rglob("*")
        if f.is_file()
    }
    # the same bytes a checkout's build makes
    assert staged == staging.plan(board="esp32-devkitc")
    assert (cache / "lib" / "umqtt" / "simple.py").read_bytes() == UMQTT_SIMPLE.read_bytes()

    with running_platform(tmp_path / "platform", linger_s=1.0) as plat:
        pk, _secret = plat.registry.add_product()
        p = zb(
            "board", "run", "--flash", "board", "--mac", "24:0a:c4:00:16:02",
            "--platform", str(plat.state_dir), "--product-key", pk,
            "--platform-port", str(plat.mqtts_port), "--until-messages", "1", "--timeout", "240",
            timeout=300,
        )  # fmt: skip
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-2000:]
        assert "[reg] registered as 240ac4001602" in p.stdout
        assert (work / "board" / "lib" / "zeroburn" / "app.mpy").is_file()

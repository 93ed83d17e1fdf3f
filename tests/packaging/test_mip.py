# mip: the committed package.json is what firmware/manifest.py says, and the real mpremote's
# `mip install` of it puts the library into a virtual board's /lib, after which the board, given
# only main.py, config.json and ca.pem, registers with the platform and reports.
import hashlib
import json
import os
import select
import subprocess
import sys
from pathlib import Path

from host_tools.build import mip, staging
from host_tools.build.config_cmd import platform_config
from host_tools.paths import FIRMWARE, ROOT, UMQTT_SIMPLE
from host_tools.platform.testing import running_platform
from tests.conftest import stop_process
from tests.emulator.test_mpremote import Console

VENV_BIN = Path(sys.executable).parent
MAC = "24:0a:c4:00:16:01"
DN = MAC.replace(":", "")


def test_committed_package_json_is_generated_from_the_manifest():
    committed = (ROOT / "package.json").read_text()
    assert committed == mip.render(), "package.json is out of date: run `make package.json`"
    d = json.loads(committed)
    # everything the build stages into /lib (apart from umqtt.simple, a dependency) and no more
    lib = sorted(p[len("lib/") : -len(".mpy")] for p in staging.plan() if p.startswith("lib/"))
    assert sorted(t[: -len(".py")] for t, _ in d["urls"]) == [
        p for p in lib if not p.startswith("umqtt/")
    ]
    for target, source in d["urls"]:
        assert (ROOT / source).is_file() and source == f"firmware/{target}"
    assert d["deps"] == [["umqtt.simple", "latest"]]
    assert not any(t in ("main.py", "boot.py") for t, _ in d["urls"])  # the user's, at /


def test_package_json_follows_the_manifest(tmp_path):
    """A module added to the library appears in package.json; so does a new require()."""
    fw = tmp_path / "firmware"
    (fw / "zeroburn").mkdir(parents=True)
    (fw / "zeroburn" / "__init__.py").write_text("")
    (fw / "zeroburn" / "extra.py").write_text("X = 1\n")
    (fw / "manifest.py").write_text(
        'metadata(version="9.9")\nrequire("umqtt.simple")\nrequire("umqtt.robust", "1.0")\n'
        'package("zeroburn")\n'
    )
    d = mip.package_json(fw, tmp_path)
    assert d == {
        "urls": [
            ["zeroburn/__init__.py", "firmware/zeroburn/__init__.py"],
            ["zeroburn/extra.py", "firmware/zeroburn/extra.py"],
        ],
        "deps": [["umqtt.simple", "latest"], ["umqtt.robust", "1.0"]],
        "version": "9.9",
    }


def local_index(root, mpy_version):
    """A mip package index in a folder, laid out as micropython.org/pi/v2 serves one
    (package/<mpy>/<name>/<version>.json naming files by hash under file/), holding the pinned
    umqtt.simple compiled for the board. mpremote reads an index given as a path directly."""
    data = staging.compile_mpy(UMQTT_SIMPLE, "umqtt/simple.py")
    digest = hashlib.sha256(data).hexdigest()[:8]
    blob = root / "file" / digest[:2] / digest
    blob.parent.mkdir(parents=True)
    blob.write_bytes(data)
    pkg = root / "package" / str(mpy_version) / "umqtt.simple"
    pkg.mkdir(parents=True)
    (pkg / "latest.json").write_text(
        json.dumps({"hashes": [["umqtt/simple.mpy", digest]], "deps": [], "version": "1.3.4"})
    )
    return root


def mpremote(link, *args, timeout=120):
    return subprocess.run(
        [str(VENV_BIN / "mpremote"), "connect", str(link), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_mip_install_onto_a_virtual_board_then_it_registers_and_reports(tmp_path, micropython):
    with running_platform(tmp_path / "platform", linger_s=1.0) as plat:
        pk, _secret = plat.registry.add_product()
        flash = tmp_path / "flash"
        flash.mkdir()
        link = tmp_path / "ttyZB"
        proc = subprocess.Popen(
            [str(VENV_BIN / "zeroburn"), "board", "serve", "--flash", str(flash), "--mac", MAC]
            + ["--link", str(link), "--port", "0", "--echo"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            r, _, _ = select.select([proc.stdout], [], [], 60)
            assert r, "serve printed nothing"
            os.read(proc.stdout.fileno(), 4096)
            console = Console(proc.stderr)
            # the board has booted (its ROM line) before mpremote asks it for a raw REPL
            console.wait("rst:0x1 (POWERON_RESET)", timeout=60)

            # what a user's board knows of itself: mip reads sys.path and the .mpy version
            p = mpremote(
                link, "exec", "import sys; print(sys.path, sys.implementation._mpy & 255)"
            )
            assert p.returncode == 0, p.stderr
            assert p.stdout.split("] ")[0] + "]" == "['', '.frozen', '/lib']"
            mpy_version = int(p.stdout.split("] ")[1])
            index = local_index(tmp_path / "index", mpy_version)

            p = mpremote(link, "mip", "install", "--index", str(index), str(ROOT / "package.json"))
            assert p.returncode == 0, p.stdout + p.stderr
            assert "Installing umqtt.simple (latest)" in p.stdout
            got = sorted(str(f.relative_to(flash)) for f in flash.rglob("*") if f.is_file())
            ours = sorted(
                f"lib/{t}" for t, _ in json.loads((ROOT / "package.json").read_text())["urls"]
            )
            assert [f for f in got if not f.startswith(".")] == sorted(
                ours + ["lib/umqtt/simple.mpy"]
            )
            for rel in ours:  # the sources, byte for byte
                assert (flash / rel).read_bytes() == (FIRMWARE / rel[len("lib/") :]).read_bytes()

            # the application's own files at /, as a user adds them: main.py, config, CA
            cfg = tmp_path / "config.json"
            cfg.write_text(
                json.dumps(platform_config(plat.state_dir, pk, port=plat.mqtts_port, interval_s=1))
            )
            p = mpremote(
                link,
                "fs", "cp", str(FIRMWARE / "main.py"), ":main.py", "+",
                "fs", "cp", str(cfg), ":config.json", "+",
                "fs", "cp", str(plat.ca_path), ":ca.pem", "+",
                "reset",
            )  # fmt: skip
            assert p.returncode == 0, p.stderr
            console.wait(f"[reg] registered as {DN}", timeout=120)
            console.wait(f"[mqtt] online as {DN}", timeout=120)
            console.wait("[tel] acked", timeout=120)
        finally:
            stop_process(proc)
        reg = [e for e in plat.registry.events(device_name=DN) if e["kind"] == "register"]
        assert len(reg) == 1
        topic = f"/{pk}/{DN}/user/update"
        assert plat.registry.messages(device_name=DN, topic=topic)

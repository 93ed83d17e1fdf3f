# Frozen images: each board's boards/<board>.manifest.py, evaluated as MicroPython's manifest
# tool does in freeze mode (host_tools/build/manifest.py) against a port tree laid out as the
# ESP32 port's (ESP-IDF cannot be installed here): it includes the port's own manifest, freezes
# the zeroburn package and umqtt.simple once, and leaves boot.py, main.py, config.json and
# ca.pem on the filesystem.
from collections import Counter

import pytest

from host_tools import __version__
from host_tools.build import boards, manifest
from host_tools.paths import BOARDS, FIRMWARE

# ports/esp32/boards/manifest.py of MicroPython 1.28 / master, statement for statement
PORT_MANIFEST = """\
freeze("$(PORT_DIR)/modules")
include("$(MPY_DIR)/extmod/asyncio")
require("bundle-networking")
require("aioespnow")
require("dht")
require("ds18x20")
require("neopixel")
require("onewire")
require("umqtt.robust")
require("umqtt.simple")
require("upysh")
"""
# micropython-lib packages: name -> (folder under micropython-lib, its manifest, its files)
LIB = {
    "umqtt.simple": (
        "micropython/umqtt.simple",
        'metadata(version="1.7.0")\npackage("umqtt")\n',
        ["umqtt/simple.py"],
    ),
    "umqtt.robust": (
        "micropython/umqtt.robust",
        'metadata(version="1.0.2")\nrequire("umqtt.simple")\npackage("umqtt")\n',
        ["umqtt/robust.py"],
    ),
    "bundle-networking": (
        "micropython/bundles/bundle-networking",
        'metadata(version="0.2.0")\nrequire("mip")\nrequire("ntptime")\n',
        [],
    ),
    "mip": ("micropython/mip", 'metadata(version="0.4.0")\npackage("mip")\n', ["mip/__init__.py"]),
    "ntptime": ("micropython/net/ntptime", 'metadata(version="0.1.1")\nmodule("ntptime.py")\n',
                ["ntptime.py"]),
}  # fmt: skip
for _n in ("aioespnow", "dht", "ds18x20", "neopixel", "onewire", "upysh"):
    LIB[_n] = (f"micropython/drivers/{_n}", f'metadata(version="0.1")\nmodule("{_n}.py")\n',
               [f"{_n}.py"])  # fmt: skip


@pytest.fixture
def port(tmp_path):
    """$(MPY_DIR), $(PORT_DIR), $(MPY_LIB_DIR) of a MicroPython checkout, as path variables."""
    mpy = tmp_path / "micropython"
    port = mpy / "ports" / "esp32"
    (port / "boards").mkdir(parents=True)
    (port / "boards" / "manifest.py").write_text(PORT_MANIFEST)
    (port / "modules").mkdir()
    for name in ("_boot.py", "flashbdev.py", "inisetup.py", "espnow.py"):
        (port / "modules" / name).write_text("# port module\n")
    aio = mpy / "extmod" / "asyncio"
    aio.mkdir(parents=True)
    (aio / "manifest.py").write_text('package("asyncio", base_path="..")\n')
    (aio / "__init__.py").write_text("")
    (aio / "core.py").write_text("")
    lib = mpy / "lib" / "micropython-lib"
    for folder, text, files in LIB.values():
        d = lib / folder
        d.mkdir(parents=True)
        (d / "manifest.py").write_text(text)
        for f in files:
            (d / f).parent.mkdir(parents=True, exist_ok=True)
            (d / f).write_text("# library module\n")
    return {"MPY_DIR": mpy, "PORT_DIR": port, "MPY_LIB_DIR": lib, "BOARD_DIR": port / "boards"}


def frozen_boards():
    return [b for b in boards.names() if boards.load(b).micropython_build]


def test_every_real_board_has_a_frozen_manifest():
    assert frozen_boards() == sorted(
        p.name[: -len(".manifest.py")] for p in BOARDS.glob("*.manifest.py")
    )
    assert len(frozen_boards()) == 3


@pytest.mark.parametrize("board", frozen_boards())
def test_board_manifest_freezes_the_library_over_the_port_manifest(board, port):
    m = manifest.evaluate(BOARDS / f"{board}.manifest.py", manifest.FREEZE, port)
    assert port["PORT_DIR"] / "boards" / "manifest.py" in m.included
    targets = m.targets()
    counts = Counter(targets)
    assert [t for t, n in counts.items() if n > 1] == []  # nothing frozen twice
    # the port's own: _boot.py mounts the filesystem; asyncio; the networking bundle
    for t in ("_boot.py", "inisetup.py", "asyncio/core.py", "mip/__init__.py", "ntptime.py"):
        assert t in targets
    # umqtt.simple once, micropython-lib's (the port requires it; so does umqtt.robust and
    # firmware/manifest.py: the tool runs its manifest once)
    simple = [e for e in m.entries if e.target == "umqtt/simple.py"]
    assert len(simple) == 1 and simple[0].package == "umqtt.simple"
    assert ("umqtt.simple", None) in m.requires and m.requires.count(("umqtt.simple", None)) >= 2
    # the zeroburn package, every module, as bytecode
    ours = sorted(e.target for e in m.entries if e.source.is_relative_to(FIRMWARE))
    assert ours == sorted(
        [f"zeroburn/{p.name}" for p in (FIRMWARE / "zeroburn").glob("*.py")] + ["otaboot.py"]
    )
    assert all(e.kind == "mpy" for e in m.entries if e.target.startswith("zeroburn/"))
    # what stays on the filesystem
    for t in ("main.py", "boot.py", "config.json", "ca.pem"):
        assert t not in targets
    assert m.top.version == __version__  # firmware/manifest.py's metadata, the one version


def test_evaluator_follows_manifestfile_semantics(tmp_path):
    """include() of a folder runs its manifest.py, paths are relative to the manifest running,
    a manifest runs once, options reach the included one, compile mode wants metadata() first
    and only .py files, module() wants a .py name."""
    (tmp_path / "sub" / "pkg").mkdir(parents=True)
    (tmp_path / "sub" / "pkg" / "__init__.py").write_text("")
    (tmp_path / "sub" / "pkg" / "notes.txt").write_text("")
    (tmp_path / "sub" / "mod.py").write_text("")
    (tmp_path / "sub" / "manifest.py").write_text(
        'options.defaults(extra=False)\npackage("pkg")\nif options.extra:\n    module("mod.py")\n'
    )
    top = tmp_path / "manifest.py"
    top.write_text('include("sub", extra=True)\ninclude("sub/manifest.py")\n')
    m = manifest.evaluate(top, manifest.FREEZE)
    assert m.targets() == ["pkg/__init__.py", "mod.py"]
    top.write_text('include("sub")\n')
    assert manifest.evaluate(top, manifest.FREEZE).targets() == ["pkg/__init__.py"]
    with pytest.raises(manifest.ManifestError, match="metadata\\(\\) must be the first"):
        manifest.evaluate(top, manifest.COMPILE)
    top.write_text('metadata(version="1")\nmodule("sub/notes.txt")\n')
    with pytest.raises(manifest.ManifestError, match="module must be .py file"):
        manifest.evaluate(top, manifest.COMPILE)
    top.write_text('metadata(version="1")\nrequire("nowhere")\n')
    with pytest.raises(manifest.ManifestError, match="not found in any known library"):
        manifest.evaluate(top, manifest.COMPILE)
    top.write_text('freeze("$(PORT_DIR)/modules")\n')
    with pytest.raises(manifest.ManifestError, match="unknown path variable"):
        manifest.evaluate(top, manifest.FREEZE)


def test_the_old_manifest_would_freeze_main_py_and_umqtt_twice(tmp_path, port):
    """What the test above guards against: a manifest that freezes main.py (over the user's)
    and brings its own umqtt.simple is caught."""
    (tmp_path / "main.py").write_text("")
    (tmp_path / "umqtt").mkdir()
    (tmp_path / "umqtt" / "simple.py").write_text("")
    bad = tmp_path / "manifest.py"
    bad.write_text(
        'include("$(PORT_DIR)/boards/manifest.py")\nmodule("main.py")\npackage("umqtt")\n'
    )
    targets = manifest.evaluate(bad, manifest.FREEZE, port).targets()
    assert "main.py" in targets and targets.count("umqtt/simple.py") == 2

# Fixtures for the OTA tests: the platform with its OTA service, virtual boards running the real
# firmware, and packages made by `zeroburn ota build`'s code from the firmware build.
import hashlib
import itertools
import json

import pytest

from host_tools.build import otapkg
from host_tools.platform.ota import OtaStore
from host_tools.platform.testing import running_platform
from tests.integration.conftest import board_maker
from tests.integration.test_device_lifecycle import wait_until  # noqa: F401  (for the OTA tests)

RUNTIMES = ["micropython", "cpython"]
_macs = itertools.count(0x20)


@pytest.fixture
def ota_settings():
    return {}


@pytest.fixture
def plat(tmp_path, ota_settings):
    with running_platform(tmp_path / "platform", linger_s=1.0, ota=ota_settings) as p:
        p.product_key, p.product_secret = p.registry.add_product()
        p.store = OtaStore(p.state_dir)
        yield p
        p.store.close()


@pytest.fixture
def make_board(tmp_path, plat):
    """make_board(runtime, **config overrides) -> a started VirtualBoard with a fresh flash
    (with a user's application folder in place of the example main.py when app is given)."""
    with board_maker(tmp_path, plat, "24:0a:c4:00:01:", _macs, interval_s=2) as make:
        yield make


def package(runtime, version="0.2.0", change=None):
    """Package bytes of the firmware build for a runtime; change(files) may edit the files."""
    files = otapkg.package_files(runtime=runtime)
    if change:
        change(files)
    return otapkg.make(files, version)


def upload(plat, data, version="0.2.0", **ext):
    return plat.store.add_package(data, plat.product_key, version, ext_data=ext)["id"]


def task(plat, dn):
    rows = [r for r in plat.store.status() if r["device_name"] == dn]
    return rows[-1] if rows else None


def progress(plat, dn):
    """The progress steps the device reported, in order."""
    plat.flush()
    return [int(e["cause"]) for e in plat.registry.events(device_name=dn, kind="ota_progress")]


def informed(plat, dn):
    plat.flush()
    return [e["cause"] for e in plat.registry.events(device_name=dn, kind="ota_inform")]


def flash_digest(board, names=("config.json", "ca.pem", "boot.py", "main.py")):
    """SHA-256 of the board's own files and its credential record (NVS or creds.bin). Not the
    NVS entry "ids": the outbox's id reservation moves on as messages go out (session.ids)."""
    out = {}
    for n in names:
        out[n] = hashlib.sha256((board.flash / n).read_bytes()).hexdigest()
    for p in sorted(board.flash.glob(".nvs/**/*")) + sorted(board.flash.glob("creds.bin")):
        if p.is_file() and p.name != "ids":
            out[str(p.relative_to(board.flash))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def switch(board):
    try:
        return json.loads((board.flash / "zb" / "active.json").read_text())
    except (OSError, ValueError):
        return {}

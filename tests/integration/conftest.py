# End-to-end fixtures: the platform emulator and virtual boards running the real firmware.
import contextlib
import itertools
import json

import pytest

from host_tools.build.config_cmd import platform_config
from host_tools.emulator.board import VirtualBoard
from host_tools.platform.testing import running_platform

RUNTIMES = ["micropython", "cpython"]
_macs = itertools.count(0x10)


@pytest.fixture
def plat(tmp_path):
    with running_platform(tmp_path / "platform", linger_s=1.0) as p:
        p.product_key, p.product_secret = p.registry.add_product()
        yield p


@pytest.fixture
def make_board(tmp_path, plat):
    """make_board(runtime, **config overrides) -> a started VirtualBoard with a fresh flash."""
    boards = []

    def make(runtime, start=True, mac=None, **overrides):
        mac = mac or "24:0a:c4:00:00:%02x" % next(_macs)
        overrides.setdefault("interval_s", 1)
        config = platform_config(
            plat.state_dir, plat.product_key, port=plat.mqtts_port, **overrides
        )
        flash = tmp_path / ("flash-" + mac.replace(":", ""))
        board = VirtualBoard(flash, mac=mac, runtime=runtime)
        board.install(config=config, ca_pem=plat.ca_path)
        boards.append(board)
        if start:
            board.start()
        return board

    yield make
    for board in boards:
        with contextlib.suppress(Exception):
            board.stop()


def samples(plat, dn):
    """Telemetry payloads the platform stored for a device, parsed, in arrival order."""
    topic = f"/{plat.product_key}/{dn}/user/update"
    return [json.loads(m["payload"]) for m in plat.registry.messages(device_name=dn, topic=topic)]


def registrations(plat, dn):
    return [e for e in plat.registry.events(device_name=dn) if e["kind"] == "register"]

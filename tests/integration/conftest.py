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


@contextlib.contextmanager
def board_maker(tmp_path, plat, mac_prefix, macs, interval_s=1, **board_args):
    """Yields make(runtime, start=True, mac=None, app=None, **config overrides) -> a
    VirtualBoard with a fresh flash holding the firmware (and a user's application folder in
    place of the example main.py when app is given), configured for plat; stops them all at
    the end. board_args go to VirtualBoard (heap=...)."""
    boards = []

    def make(runtime, start=True, mac=None, app=None, **overrides):
        mac = mac or mac_prefix + "%02x" % next(macs)
        overrides.setdefault("interval_s", interval_s)
        config = platform_config(
            plat.state_dir, plat.product_key, port=plat.mqtts_port, **overrides
        )
        flash = tmp_path / ("flash-" + mac.replace(":", ""))
        board = VirtualBoard(flash, mac=mac, runtime=runtime, **board_args)
        board.install(config=config, ca_pem=plat.ca_path, app=app)
        boards.append(board)
        if start:
            board.start()
        return board

    try:
        yield make
    finally:
        for board in boards:
            with contextlib.suppress(Exception):
                board.stop()


@pytest.fixture
def make_board(tmp_path, plat):
    """make_board(runtime, **config overrides) -> a started VirtualBoard with a fresh flash."""
    with board_maker(tmp_path, plat, "24:0a:c4:00:00:", _macs) as make:
        yield make


def samples(plat, dn):
    """Telemetry payloads the platform stored for a device, parsed, in arrival order."""
    topic = f"/{plat.product_key}/{dn}/user/update"
    return [json.loads(m["payload"]) for m in plat.registry.messages(device_name=dn, topic=topic)]


def registrations(plat, dn):
    return [e for e in plat.registry.events(device_name=dn) if e["kind"] == "register"]

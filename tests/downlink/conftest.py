# Fixtures for thing-model downlink and outbox tests: the integration suite's platform and virtual
# boards, an application main.py that registers properties, services and an RRPC handler, and
# the operator's CLI run as its own process against the running platform's state file.
import contextlib
import itertools
import json
import subprocess
import sys

import pytest

from host_tools.build.config_cmd import platform_config
from host_tools.emulator.board import VirtualBoard
from host_tools.paths import ROOT
from tests.integration.conftest import plat  # noqa: F401  (fixture)

# The application's own code comes on top of the firmware's 48K budget (main.py is compiled on
# the board, and its functions stay in the heap). A real ESP32's GC heap starts at 56 KiB and
# grows into the IDF heap on demand, with 32-bit objects half this VM's size. Measured: at 64K
# the heap left for a handler is ~13 KiB in fragments; with OTA's boot state (issue 17) a 4 KB
# answer fails at 80K (a proper 400 "output too large for the heap") and goes out at 88K; these
# boards get 96K.
APP_HEAP = "96K"
_macs = itertools.count(0x80)

# The README's example application, plus what the tests need to provoke: a service that raises,
# one that sleeps, one with a large answer, and resets from inside the application.
APP_MAIN = """# main.py: a lamp with a sensor, a property the cloud can set, services and RRPC
import machine
import os
import time

from zeroburn import app, post

lamp = {"on": 0}
dev = []


def exists(name):
    try:
        os.stat(name)
        return True
    except OSError:
        return False


def set_light(v):
    if v not in (0, 1):
        raise ValueError("LightSwitch is 0 or 1")
    lamp["on"] = v


def blink(params):
    return {"blinked": params.get("times", 1) * 2}


def boom(params):
    raise RuntimeError("boom")


def slow(params):
    time.sleep_ms(params["ms"])
    return {"slept": params["ms"]}


def big(params):
    return {"blob": "x" * params["n"]}


def rrpc(payload, topic):
    if payload[:5] == b"sleep":
        time.sleep_ms(int(payload[5:]))
    return b"pong:" + payload


def sensors():
    if exists("reset"):
        os.remove("reset")
        print("[test] machine.reset()")
        machine.reset()
    if exists("hang"):
        os.remove("hang")
        print("[test] sensor hangs")
        while True:
            time.sleep_ms(500)
    if exists("event") and dev:
        os.remove("event")
        print("[test] event #%d" % post.event(dev[0], "Tick", {"lamp": lamp["on"]}))
    return None  # the default sample only (~85 bytes): 20 of them fit RTC memory's 2 KiB


app.main(
    sensors=sensors,
    properties={"LightSwitch": (lambda: lamp["on"], set_light), "Model": (lambda: "zb1", None)},
    services={"Blink": blink, "Boom": boom, "Slow": slow, "Big": big},
    rrpc=rrpc,
    setup=dev.append,
)
"""


@pytest.fixture
def app_board(tmp_path, plat):  # noqa: F811
    """app_board(runtime, online=True, **config) -> a started board running APP_MAIN."""
    boards = []

    def make(runtime, online=True, **overrides):
        mac = "24:0a:c4:00:01:%02x" % next(_macs)
        overrides.setdefault("interval_s", 1)
        config = platform_config(
            plat.state_dir, plat.product_key, port=plat.mqtts_port, **overrides
        )
        board = VirtualBoard(
            tmp_path / ("flash-" + mac[-5:]), mac=mac, runtime=runtime, heap=APP_HEAP
        )
        board.install(config=config, ca_pem=plat.ca_path)
        (board.flash / "main.py").write_text(APP_MAIN)
        boards.append(board)
        board.start()
        if online:
            board.wait_for(r"\[mqtt\] online as " + board.name, timeout=90)
        return board

    yield make
    for board in boards:
        with contextlib.suppress(Exception):
            board.stop()


@pytest.fixture
def cli(plat):  # noqa: F811
    """cli(*args) -> (exit status, parsed --json output or text): `zeroburn platform ...` as
    a separate process, reaching the running platform through its state file only."""

    def run(*args, timeout=120):
        cmd = [sys.executable, "-m", "host_tools.cli", "platform", *args]
        cmd += ["--state", str(plat.state_dir), "--json"]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
        out = p.stdout.strip()
        try:
            return p.returncode, json.loads(out.splitlines()[-1]) if out else None
        except ValueError:
            return p.returncode, out + p.stderr

    return run

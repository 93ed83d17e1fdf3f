# The README's "complete main.py" (section "Commands from the cloud and the durable outbox") runs
# as written: taken from the README itself, so the test fails when the README drifts, run as a
# user's application (--app) on a virtual board against the local platform, and driven through
# the operator CLI as the README shows. Its light sensor is the virtual board's ADC.
import json
import re
import time

import pytest

from host_tools.build.config_cmd import platform_config
from host_tools.emulator.board import VirtualBoard
from host_tools.paths import ROOT
from tests.downlink.conftest import APP_HEAP
from tests.integration.conftest import samples

SECTION = "### Commands from the cloud and the durable outbox"
LED, SENSOR = 2, 34  # the example's machine.Pin(2, OUT) and machine.ADC(machine.Pin(34))


def readme_main():
    text = (ROOT / "README.md").read_text()
    assert SECTION in text, "the README section is gone"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    m = re.search(r"^```python\n(.*?)^```$", section, re.S | re.M)
    assert m, "no python block in the README section"
    return m.group(1)


def wait_until(what, fn, timeout=30.0):
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


@pytest.mark.parametrize("runtime", ["micropython", "cpython"])
def test_the_readme_example_application_works(runtime, tmp_path, plat, cli):
    source = readme_main()
    for name in ("machine.ADC(machine.Pin(%d)" % SENSOR, "machine.Pin(%d," % LED):
        assert name in source, "the example's pins changed: update LED/SENSOR here"
    app = tmp_path / "app"
    app.mkdir()
    (app / "main.py").write_text(source)
    config = platform_config(plat.state_dir, plat.product_key, port=plat.mqtts_port, interval_s=1)
    board = VirtualBoard(tmp_path / "flash", runtime=runtime, heap=APP_HEAP)
    try:
        board.install(config=config, ca_pem=plat.ca_path, app=app)
        board.set_adc(SENSOR, 0x9C40)  # 40000 of 65535: read() at 12 bits is 2500
        board.start()
        board.wait_for(r"\[mqtt\] online as " + board.name, timeout=90)
        dn = board.name

        rc, out = cli("property", "set", dn, '{"LightSwitch": 1}')
        assert rc == 0 and out["reply"]["code"] == 200, out
        wait_until("LED never on", lambda: board.pins.get(LED) == 1)
        rc, out = cli("property", "set", dn, '{"LightSwitch": 7}')
        assert rc == 0 and out["reply"]["code"] == 460, out  # the setter refuses: answered 460
        assert board.pins[LED] == 1

        rc, out = cli("service", "invoke", dn, "Blink", '{"times": 3}')
        assert rc == 0 and out["reply"]["code"] == 200, out
        assert out["reply"]["data"] == {"blinked": 3}
        wait_until("LED not toggled 3 times", lambda: board.pins.get(LED) == 0)

        rc, out = cli("rrpc", dn, "ping")
        assert rc == 0 and out["reply"] == "pong:ping", out

        def lux():
            got = [s["sensors"]["lux"] for s in samples(plat, dn) if "sensors" in s]
            return got and got[-1]

        assert wait_until("no sample with sensors.lux", lux) == 2500
        # full light: over 4000 the example posts its TooBright event (queued durably, QoS 1)
        board.set_adc(SENSOR, 0xFFFF)
        topic = f"/sys/{plat.product_key}/{dn}/thing/event/TooBright/post"
        msg = wait_until(
            "no TooBright event", lambda: plat.registry.messages(device_name=dn, topic=topic)
        )
        body = json.loads(msg[-1]["payload"])
        assert body["params"]["value"] == {"lux": 4095}
        assert not any("Traceback" in line for line in board.lines)
    finally:
        board.stop()

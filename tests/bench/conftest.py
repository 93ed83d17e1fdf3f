# Fixtures of the bench tests: a platform emulator in this process, on free loopback ports.
import pytest


@pytest.fixture
def platform(tmp_path):
    from host_tools.platform.server import Platform

    plat = Platform(tmp_path / "platform", mqtt_port=0, mqtts_port=0)
    plat.start()
    try:
        yield plat
    finally:
        plat.stop()

# Fixtures of the bench tests: a platform emulator in this process, on free loopback ports.
import pytest


@pytest.fixture
def platform(tmp_path):
    from host_tools.platform.server import Platform

    # Load tests push far past Aliyun's per-device limits on purpose: those are off here.
    plat = Platform(
        tmp_path / "platform", mqtt_port=0, mqtts_port=0, uplink_qps=0, uplink_bytes_per_s=0
    )
    plat.start()
    try:
        yield plat
    finally:
        plat.stop()

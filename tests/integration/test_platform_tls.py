# The firmware on both runtimes through the platform's Aliyun-shaped chain (RSA root, intermediate,
# RSA leaf), on the legacy-style port that serves TLS and plain TCP alike.
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from host_tools.build.config_cmd import platform_config
from host_tools.emulator.board import VirtualBoard
from tests.integration.conftest import RUNTIMES, registrations, samples
from tests.integration.test_device_lifecycle import wait_until


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_firmware_registers_and_reports_through_the_rsa_chain(runtime, plat, tmp_path):
    served = x509.load_pem_x509_certificates(
        (Path(plat.ca_path).parent / "server.pem").read_bytes()
    )
    assert len(served) == 2 and all(isinstance(c.public_key(), rsa.RSAPublicKey) for c in served)
    config = platform_config(plat.state_dir, plat.product_key, port=plat.mqtt_port, interval_s=1)
    board = VirtualBoard(tmp_path / "flash", mac="24:0a:c4:00:12:01", runtime=runtime)
    board.install(config=config, ca_pem=plat.ca_path)
    board.start()
    try:
        board.wait_for(r"\[mqtt\] online as " + board.name, timeout=60)
        wait_until(lambda: len(samples(plat, board.name)) >= 2, 30, "two samples")
        assert len(registrations(plat, board.name)) == 1
    finally:
        board.stop()

# Fixtures of the platform tests: an in-process platform on free loopback ports.
import pytest

from host_tools.platform.testing import client_context, running_platform


@pytest.fixture
def platform(tmp_path):
    """A running platform with short linger and keepalive minimum so timing tests stay quick."""
    with running_platform(tmp_path / "platform", linger_s=1.0) as plat:
        yield plat


@pytest.fixture
def product(platform):
    """(productKey, productSecret) of a product with dynamic registration on."""
    return platform.registry.add_product()


@pytest.fixture
def tls(platform):
    return client_context(platform.ca_path)

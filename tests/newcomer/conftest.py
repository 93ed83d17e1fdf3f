# The newcomer's path (issue 15): fixtures shared with the flashing tests.
from tests.flash.conftest import platform, served  # noqa: F401

"""zeroburn host tools: CLI, platform emulator, virtual boards, build and flashing."""

import re

from host_tools.paths import FIRMWARE_INIT


def _firmware_version():
    """VERSION in firmware/zeroburn/__init__.py: the firmware, the CLI and the wheel share it."""
    found = re.search(r'^VERSION = "([^"]+)"', FIRMWARE_INIT.read_text(), re.M)
    if not found:
        raise RuntimeError(f"{FIRMWARE_INIT} defines no VERSION")
    return found.group(1)


__version__ = _firmware_version()

"""zeroburn host tools: CLI, platform emulator, virtual boards, build and flashing."""

__version__ = "0.1.0"

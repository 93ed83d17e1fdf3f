"""Virtual ESP32 boards: the unchanged firmware in the MicroPython VM or in CPython, with
faults (`zeroburn board`), the shims that stand in for the ESP32 port, and `make demo` (one
virtual board against the local platform).

May import: the base (host_tools.errors, paths, runtime, sysdeps), host_tools.build (a board's
flash is staged by the build) and host_tools.platform (a board pointed at the local platform).
Never flash or load.
"""

from host_tools.emulator.board import (  # noqa: F401
    CUT_POINTS,
    DEEPSLEEP_RESET,
    HARD_RESET,
    PWRON_RESET,
    SOFT_RESET,
    WDT_RESET,
    VirtualBoard,
)

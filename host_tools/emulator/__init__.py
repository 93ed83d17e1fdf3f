# Virtual ESP32 boards: the unchanged firmware in the MicroPython VM or in CPython, with faults.
from host_tools.emulator.board import (  # noqa: F401
    CUT_POINTS,
    DEEPSLEEP_RESET,
    HARD_RESET,
    PWRON_RESET,
    SOFT_RESET,
    WDT_RESET,
    VirtualBoard,
)

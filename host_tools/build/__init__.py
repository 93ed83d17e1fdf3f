"""What goes on a board: the staging step (mpy-cross firmware + umqtt.simple + CA bundle +
config), the MicroPython-side deps `make setup` fetches, the CA bundle, the board files, and
`zeroburn config init|check`.

May import: the base (host_tools.errors, paths, runtime, sysdeps) and host_tools.platform
(config init --platform reads the local platform's state). Never flash, emulator or load.
"""

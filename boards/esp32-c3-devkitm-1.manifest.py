# A frozen MicroPython image with zeroburn inside, for the Espressif ESP32-C3-DevKitM-1:
#   cd micropython/ports/esp32
#   make BOARD=ESP32_GENERIC_C3 \
#       FROZEN_MANIFEST=/path/to/zeroburn/boards/esp32-c3-devkitm-1.manifest.py
# (docs/packaging.md: the whole build with ESP-IDF). A FROZEN_MANIFEST replaces the port's own
# manifest, so include it first: it freezes _boot.py (which mounts the filesystem), asyncio,
# the networking bundle and micropython-lib's umqtt.simple and umqtt.robust.
# ruff: noqa: F821  (include is supplied by MicroPython's manifest tool)
include("$(PORT_DIR)/boards/manifest.py")
# Then the zeroburn library: firmware/manifest.py freezes the zeroburn package; its
# require("umqtt.simple") is the one the port's manifest already made, which the tool runs only
# once. boot.py, main.py, config.json and ca.pem stay on the filesystem (`zeroburn flash`).
include("../firmware/manifest.py")

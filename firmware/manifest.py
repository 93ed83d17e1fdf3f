# The zeroburn library, in MicroPython's manifest format (tools/manifestfile.py). One list, three
# uses: `zeroburn build` stages these files into /lib (as .mpy), package.json (generated from this
# file: `make package.json`) lets `mpremote mip install` put them in /lib, and a frozen image
# includes this file (boards/<board>.manifest.py). boot.py and main.py are not library files:
# the build puts them at / (they stay on the filesystem, the user's to change).
# ruff: noqa: F821  (metadata, require, package are supplied by the manifest tool)
# pyright: reportUndefinedVariable=false
metadata(
    description="zeroburn: self-registering Aliyun IoT firmware",
    version="0.1.0",
    license="MIT",
)
require("umqtt.simple")
module("otaboot.py")  # the OTA loader, to /lib: never part of an update package
package("zeroburn")

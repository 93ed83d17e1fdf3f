# What goes on a board (micropython-lib manifest style); host_tools/build.py executes it.
# ruff: noqa: F821  (module, package, require, metadata are supplied by the build)
metadata(description="zeroburn: self-registering Aliyun IoT firmware", version="0.1.0")
require("umqtt.simple")
module("boot.py")
module("main.py")
module("otaboot.py")  # the OTA loader: at the root, never part of an update package
package("zeroburn")

# What a build puts on a board: boot.py and main.py at /, the library and umqtt.simple in /lib
# (where mip installs libraries), and the tools that read the layout agree with it.
from host_tools.build import staging
from host_tools.flash import flashing
from host_tools.load import bench_device
from host_tools.paths import FIRMWARE


def test_build_puts_the_library_in_lib():
    files = staging.plan(board="esp32-devkitc", config=None)
    assert sorted(p for p in files if "/" not in p) == ["boot.py", "main.py"]
    lib = sorted(p for p in files if "/" in p)
    assert lib == sorted(
        [f"lib/zeroburn/{p.stem}.mpy" for p in (FIRMWARE / "zeroburn").glob("*.py")]
        + ["lib/umqtt/simple.mpy", "lib/otaboot.mpy"]  # the OTA loader lives in /lib too
    )
    # a re-flash finds nothing of its own build stale
    assert flashing.stale_files(dict.fromkeys(files, "x"), list(files)) == []


def test_bench_counts_umqtt_apart_from_the_firmware():
    size = bench_device.firmware_size()
    umqtt = len(staging.plan()["lib/umqtt/simple.mpy"])
    assert size["umqtt_mpy_bytes"] == umqtt
    assert size["firmware_mpy_bytes"] == size["mpy_bytes"] - umqtt

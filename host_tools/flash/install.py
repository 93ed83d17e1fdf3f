# `zeroburn install-micropython`: write MicroPython itself onto a board with esptool.
import subprocess
import sys
from pathlib import Path

from host_tools.build import boards
from host_tools.errors import ZeroburnError

ESP_IMAGE_MAGIC = 0xE9
DEFAULT_BAUD = 460800
CHIP_NAMES = {
    0: "ESP32",
    2: "ESP32-S2",
    5: "ESP32-C3",
    9: "ESP32-S3",
    12: "ESP32-C2",
    13: "ESP32-C6",
}


def check_image(board, data, name="image"):
    """Refuse an image that is not an ESP image for this board's chip (ValueError)."""
    if board.virtual:
        raise ValueError(
            f"board {board.name} is virtual: MicroPython is part of it, nothing to install"
        )
    if len(data) < 24 or data[0] != ESP_IMAGE_MAGIC:
        raise ValueError(
            f"{name} is not an ESP firmware image (no 0xE9 header): download the .bin of "
            f"{board.micropython_build} from micropython.org/download"
        )
    chip_id = data[12] | data[13] << 8
    if chip_id != board.image_chip_id:
        have = CHIP_NAMES.get(chip_id, f"chip id {chip_id}")
        raise ValueError(
            f"{name} is built for {have}, but board {board.name} has an {board.chip}: "
            f"use the {board.micropython_build} image"
        )


def esptool_commands(board, port, firmware, baud=DEFAULT_BAUD, erase=True):
    """esptool argument lists (run as `python -m esptool ARGS`): erase, then write the image
    at the board's offset."""
    if board.virtual:
        raise ValueError(f"board {board.name} is virtual: there is no esptool step")
    base = ["--chip", board.chip, "--port", str(port), "--baud", str(baud)]
    cmds = [base + ["erase-flash"]] if erase else []
    cmds.append(base + ["write-flash", "-z", hex(board.flash_offset), str(firmware)])
    return cmds


def _install(args):
    board = boards.load(args.board)
    fw = Path(args.firmware)
    try:
        data = fw.read_bytes()
    except OSError as e:
        raise ZeroburnError(f"cannot read {fw}: {e.strerror}")
    try:
        check_image(board, data, fw.name)
        cmds = esptool_commands(board, args.device, fw, args.baud, erase=not args.no_erase)
    except ValueError as e:
        raise ZeroburnError(str(e))
    port = str(args.device)
    if not args.dry_run and sys.platform != "win32" and "://" not in port:
        if not Path(port).exists():
            # as `flash` says it, before esptool's own error and the bootloader advice
            raise ZeroburnError(f"{port} does not exist: is the board plugged in?")
    for cmd in cmds:
        print("esptool " + " ".join(cmd), flush=True)
        if args.dry_run:
            continue
        rc = subprocess.run([sys.executable, "-m", "esptool", *cmd]).returncode
        if rc != 0:
            raise ZeroburnError(
                f"esptool failed (exit {rc}); hold BOOT and press EN/RST to enter the "
                "bootloader, then try again"
            )
    if not args.dry_run:
        print(f"MicroPython written at {board.flash_offset:#x}; next: zeroburn flash")
    return 0

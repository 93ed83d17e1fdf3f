# The `zeroburn` command: a table of subcommands, mpremote style, one error type.
import argparse
import importlib
import sys

from host_tools import __version__
from host_tools.errors import ZeroburnError

# name -> (module that provides configure(parser), one-line help).
# A module's configure() adds its arguments and sets `handler` (a function taking the args).
COMMANDS = {
    "platform": (
        "host_tools.platform.cli",
        "run and operate the local Aliyun IoT platform emulator",
    ),
    "board": (
        "host_tools.emulator.cli",
        "run a virtual ESP32 board (firmware under MicroPython or CPython)",
    ),
    "fleet": ("host_tools.load.fleet", "boot many virtual boards against the platform emulator"),
    "bench": ("host_tools.load.bench", "measure device-side and platform-side figures"),
    "build": (
        "host_tools.build.staging",
        "compile the firmware into a staging folder (what goes on a board)",
    ),
    "config": ("host_tools.build.config_cmd", "write or check a device config.json"),
    "ota": ("host_tools.build.otapkg", "make an over-the-air update package (docs/ota.md)"),
    "init-project": (
        "host_tools.build.project",
        "write an example application folder (main.py, a sensor driver) for --app",
    ),
    "flash": (
        "host_tools.flash.cli",
        "copy the firmware and config onto a board with mpremote",
    ),
    "info": (
        "host_tools.flash.cli",
        "show a board's deviceName, firmware version and credential state",
    ),
    "install-micropython": (
        "host_tools.flash.cli",
        "write MicroPython itself onto a board with esptool",
    ),
    "repl": ("host_tools.flash.cli", "open mpremote's REPL on a board or virtual board"),
    "selftest": (
        "host_tools.flash.cli",
        "check a board's hardware, network and TLS over mpremote; print a pasteable report",
    ),
}


def build_parser():
    parser = argparse.ArgumentParser(
        prog="zeroburn",
        description="ESP32 boards that register themselves with Alibaba Cloud IoT (regnwl).",
    )
    parser.add_argument("--version", action="version", version=f"zeroburn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        module = importlib.import_module(module_name)
        module.configure(p, name)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 1 if args.command is None else 0
    try:
        result = args.handler(args)
    except ZeroburnError as e:
        print(f"zeroburn: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        # on a line of its own: a progress line may be half drawn
        print("\nzeroburn: interrupted (Ctrl-C)", file=sys.stderr)
        return 130
    return result or 0


if __name__ == "__main__":
    sys.exit(main())

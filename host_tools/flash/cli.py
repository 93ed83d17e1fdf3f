# The parsers of `zeroburn flash|info|install-micropython|repl`; each command's handler lives
# in its own module (flashing, info, install, repl).
from host_tools.build import boards
from host_tools.flash import flashing, info, install, repl, selftest


def configure(parser, name):
    {
        "flash": _configure_flash,
        "info": _configure_info,
        "install-micropython": _configure_install,
        "repl": _configure_repl,
        "selftest": _configure_selftest,
    }[name](parser)


def _device_arg(p, virtual=True):
    p.add_argument(
        "--device",
        required=True,
        metavar="PORT",
        help="serial port (/dev/ttyUSB0, COM3), a virtual board's pty, or socket://HOST:PORT"
        if virtual
        else "serial port of the board (/dev/ttyUSB0, /dev/cu.usbserial-0001, COM3)",
    )


def _configure_flash(p):
    _device_arg(p)
    p.add_argument("--board", required=True, help=f"board name ({', '.join(boards.names())})")
    p.add_argument("--config", required=True, metavar="FILE", help="device config.json")
    p.add_argument(
        "--ca",
        metavar="FILE",
        help="PEM bundle to put on the board as ca.pem (default: Aliyun's roots)",
    )
    creds = p.add_mutually_exclusive_group()
    creds.add_argument(
        "--keep-credentials",
        dest="wipe",
        action="store_false",
        help="leave a stored device token alone (default)",
    )
    creds.add_argument(
        "--wipe-credentials",
        dest="wipe",
        action="store_true",
        help="erase the stored token: the board registers again (uses an activation slot)",
    )
    p.set_defaults(wipe=False)
    p.add_argument(
        "--timeout",
        type=float,
        default=120,
        metavar="S",
        help="seconds to wait for registration and the first acknowledged telemetry "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--no-follow",
        action="store_true",
        help="reset the board and return without waiting for it to come online",
    )
    p.add_argument(
        "--app",
        metavar="DIR",
        help="your application folder (main.py, drivers, files) instead of the example main.py",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    p.add_argument("-q", "--quiet", action="store_true", help="no board console on stderr")
    p.set_defaults(handler=flashing._flash)


def _configure_info(p):
    _device_arg(p)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(handler=info._info)


def _configure_install(p):
    _device_arg(p, virtual=False)
    real = [n for n in boards.names() if not boards.load(n).virtual]
    p.add_argument(
        "--board", required=True, choices=real, metavar="NAME", help=f"board ({', '.join(real)})"
    )
    p.add_argument(
        "--firmware", required=True, metavar="FILE.bin", help="MicroPython image for the board"
    )
    p.add_argument(
        "--baud",
        type=int,
        default=install.DEFAULT_BAUD,
        help="esptool baud rate (default: %(default)s; try 115200 on a flaky cable)",
    )
    p.add_argument("--no-erase", action="store_true", help="skip erasing the whole flash first")
    p.add_argument(
        "--dry-run", action="store_true", help="print the esptool commands, run nothing"
    )
    p.set_defaults(handler=install._install)


def _configure_repl(p):
    _device_arg(p)
    p.set_defaults(handler=repl._repl)


def _configure_selftest(p):
    _device_arg(p)
    p.add_argument("--board", required=True, help=f"board name ({', '.join(boards.names())})")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(handler=selftest._selftest)

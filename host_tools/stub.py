# Subcommands of issues not yet done: they say so and fail, never pretend to work.
from host_tools.errors import ZeroburnError


def not_yet(what):
    def handler(args):
        raise ZeroburnError(f"{what} is not yet implemented")

    return handler


def configure_stub(parser, name):
    parser.set_defaults(handler=not_yet(f"`zeroburn {name}`"))

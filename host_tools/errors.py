# The one error type of the host tools: printed as `zeroburn: message`, exit code 1.


class ZeroburnError(Exception):
    """A problem the user can act on; the message is shown as is."""

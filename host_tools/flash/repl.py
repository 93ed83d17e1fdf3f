# `zeroburn repl`: mpremote's own REPL on a board or a virtual board's pty.
import subprocess
import sys
from pathlib import Path

from host_tools.errors import ZeroburnError


def _repl(args):
    """mpremote's own REPL (Ctrl-] or Ctrl-X leaves it)."""
    if sys.platform != "win32" and "://" not in args.device and not Path(args.device).exists():
        raise ZeroburnError(f"{args.device} does not exist: is the board plugged in?")
    return subprocess.run(
        [sys.executable, "-m", "mpremote", "connect", args.device, "repl"]
    ).returncode

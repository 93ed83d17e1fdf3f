# Running the `zeroburn` command as a user does, and small waits on its output.
import json
import os
import subprocess
import sys
import time
from pathlib import Path

VENV_BIN = Path(sys.executable).parent


def env(**extra):
    e = {k: v for k, v in os.environ.items() if not k.startswith("ZEROBURN_")}
    e.update(extra)
    return e


def zeroburn(*args, timeout=180, **extra_env):
    return subprocess.run(
        [str(VENV_BIN / "zeroburn"), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env(**extra_env),
    )


def popen(*args, **extra_env):
    return subprocess.Popen(
        [str(VENV_BIN / "zeroburn"), *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env(**extra_env),
    )


def wait_output(proc, stream, needle, timeout=120):
    """Read `stream` of proc (bounded) until needle shows up; returns what was read."""
    import select

    seen = ""
    end = time.monotonic() + timeout
    fd = stream.fileno()
    while needle not in seen and time.monotonic() < end:
        r, _, _ = select.select([fd], [], [], 0.5)
        if r:
            chunk = os.read(fd, 65536).decode(errors="replace")
            if not chunk:
                break
            seen += chunk
    assert needle in seen, seen[-3000:]
    return seen


def platform_messages(state, dn):
    p = zeroburn("platform", "messages", "--state", state, "--device", dn, "--json")
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)

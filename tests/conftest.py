# Shared fixtures: the MicroPython VM (never skipped where its wheel exists) and repo paths.
import subprocess

import pytest

from host_tools import runtime
from host_tools.paths import UMQTT_SIMPLE


@pytest.fixture(scope="session")
def micropython():
    """Path of the real MicroPython VM. Missing where it must exist is a failure, not a skip."""
    path = runtime.micropython_path()
    if path is None:
        if runtime.micropython_required():
            pytest.fail("the MicroPython VM is missing on a platform where it must be installed")
        pytest.skip("no MicroPython VM on this platform: CPython runtime only")
    return path


def run_micropython(micropython, code, path=(), heap=None, timeout=60, cwd=None):
    """Run code in the MicroPython VM with MICROPYPATH set; return CompletedProcess (text)."""
    env = {"MICROPYPATH": ":".join([*map(str, path), ".frozen", "~/.micropython/lib"])}
    cmd = [micropython]
    if heap:
        cmd += ["-X", f"heapsize={heap}"]
    cmd += ["-c", code]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)


@pytest.fixture(scope="session")
def umqtt_simple():
    assert UMQTT_SIMPLE.exists(), "umqtt/simple.py missing: `make setup` fetches it"
    return UMQTT_SIMPLE


def stop_process(proc, grace=10):
    """Ask a served process (`zeroburn board serve`) to end; kill it after `grace` seconds."""
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()

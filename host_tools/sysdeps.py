# System packages the bench needs that pip cannot install (the mosquitto reference broker).
import os
import shutil
import subprocess

MOSQUITTO_PATHS = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")


def find_mosquitto():
    """Path of the mosquitto broker, or None."""
    for path in MOSQUITTO_PATHS:
        if os.access(path, os.X_OK):
            return path
    return shutil.which("mosquitto")


def ensure_mosquitto(log=print, timeout=300):
    """Return (path, None) or (None, reason): install Debian's mosquitto with apt if missing.

    Runs `apt-get update` once and `apt-get install -y mosquitto` only as root with apt present;
    otherwise says why, so the caller can report the comparison as unavailable.
    """
    path = find_mosquitto()
    if path:
        return path, None
    apt = shutil.which("apt-get")
    if apt is None:
        return None, "mosquitto is not installed and there is no apt-get to install it"
    if os.geteuid() != 0:
        return None, (
            "mosquitto is not installed and installing it needs root: "
            "run `sudo apt-get install mosquitto` and re-run the bench"
        )
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in ([apt, "update", "-qq"], [apt, "install", "-y", "-qq", "mosquitto"]):
        log(f"bench: {' '.join(cmd[1:])} ...")
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        except subprocess.TimeoutExpired:
            return None, f"`apt-get {cmd[1]}` did not finish within {timeout} s"
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            return None, f"`apt-get {cmd[1]}` failed: {tail[0]}"
    path = find_mosquitto()
    if path is None:
        return None, "apt-get installed mosquitto but no mosquitto binary was found"
    return path, None

"""`make lint`'s type check (basedpyright, pinned in pyproject's dev extras).

firmware/ is checked against the ESP32 port's own API: the stubs published for each board's
MicroPython build (boards/*.json `micropython_build`, e.g. micropython-esp32-esp32_generic-stubs),
pinned in pyproject.toml [tool.zeroburn.typecheck] and installed into build/typings/<build>/
(not into .venv: their os, time, socket... would hide CPython's from the host check). The host
tools are checked against CPython with pyproject's [tool.basedpyright].
"""

import json
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PINS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["zeroburn"]["typecheck"]


def builds():
    out = set()
    for path in sorted((ROOT / "boards").glob("*.json")):
        build = json.loads(path.read_text()).get("micropython_build")
        if build:
            out.add(build)
    return sorted(out)


def stubs(build):
    """build/typings/<build>/: the pinned stubs of that build, installed once per pin."""
    reqs = [PINS["stubs"].format(build=build.lower()), PINS["stdlib-stubs"]]
    target = ROOT / "build" / "typings" / build
    stamp = target / ".zeroburn-pins"
    if not (stamp.exists() and stamp.read_text() == "\n".join(reqs)):
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check",
             "--no-deps", "--upgrade", "--target", str(target), *reqs],
            check=True,
        )  # fmt: skip
        stamp.write_text("\n".join(reqs))
    return target


def firmware_config(build):
    typings = stubs(build)
    config = ROOT / "build" / "typecheck" / build / "pyrightconfig.json"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(
        json.dumps(
            {
                "include": [str(ROOT / "firmware")],
                "typeCheckingMode": "basic",
                "pythonVersion": "3.8",
                "typeshedPath": str(typings),
                "stubPath": str(typings),
                "extraPaths": [str(ROOT / "firmware")],
                # machine, esp32, gc, micropython... are built into the firmware: the stubs
                # are all there is, there is no source to find
                "reportMissingModuleSource": "none",
            },
            indent=2,
        )
    )
    return config


def main():
    failed = []
    for build in builds():
        print(
            f"typecheck: firmware/ against {build} ({PINS['stubs'].format(build=build.lower())})"
        )
        if subprocess.run([BIN / "basedpyright", "-p", firmware_config(build)]).returncode:
            failed.append(f"firmware on {build}")
    print("typecheck: host_tools/ against CPython (pyproject.toml [tool.basedpyright])")
    if subprocess.run([BIN / "basedpyright", "-p", ROOT / "pyproject.toml"], cwd=ROOT).returncode:
        failed.append("host tools")
    if failed:
        print("typecheck: errors in " + ", ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

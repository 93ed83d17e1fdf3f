# A user's application folder (`--app DIR`): their main.py, drivers and extra files, staged at
# the board's root instead of the repo's firmware/main.py; `zeroburn init-project DIR` writes one.
#
# Why a folder and not a project file: the folder is what the board's root will hold, file for
# file, so there is nothing new to learn or to keep in step; what is not copied (notes, configs
# with secrets, caches) follows fixed rules, listed in IGNORED below and in the README.
import fnmatch
import json
import os
from pathlib import Path

from host_tools.errors import ZeroburnError

# Never staged from an app folder: notes, editor and VCS files, caches, and device configs
# (they hold secrets and go on the board only through --config, checked first).
IGNORED = (
    ".*",
    "__pycache__",
    "*.pyc",
    "*.md",
    "*.txt",
    "config.json",
    "*.config.json",
    "config.*.json",
)
# Names on the board that belong to zeroburn itself: an app file there would be overwritten
# by, or shadow, the firmware (ca.pem and config.json come from --ca and --config).
RESERVED = ("zeroburn", "umqtt", "lib/zeroburn", "lib/umqtt", "ca.pem", "config.json", "zb")
# Module names the firmware imports: an app module of that name at the root or in lib/ (a .py,
# .mpy or package) would be imported in their place (the root comes first on sys.path), and
# otaboot is the OTA loader (docs/ota.md): a shadow of it breaks updates and their rollback.
OWN_MODULES = ("zeroburn", "umqtt", "otaboot")


def _ignored(name):
    return any(fnmatch.fnmatch(name, pattern) for pattern in IGNORED)


def app_files(app_dir):
    """[(path on the board, source Path)] of an application folder, sorted; ZeroburnError when
    the folder is missing, has no main.py, or puts a file where zeroburn's own files go."""
    root = Path(app_dir)
    if not root.is_dir():
        raise ZeroburnError(
            f"--app {root}: no such folder (create one with `zeroburn init-project {root}`)"
        )
    if not (root / "main.py").is_file():
        raise ZeroburnError(
            f"--app {root} has no main.py: the board runs main.py at boot "
            "(`zeroburn init-project DIR` writes an example)"
        )
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not _ignored(d))
        for name in sorted(filenames):
            if _ignored(name):
                continue
            src = Path(dirpath) / name
            rel = src.relative_to(root).as_posix()
            for reserved in RESERVED:
                if rel == reserved or rel.startswith(reserved + "/"):
                    raise ZeroburnError(
                        f"--app {root}: {rel} would replace zeroburn's own {reserved} on the "
                        "board; rename it (ca.pem and config.json come from --ca and --config)"
                    )
            out.append((rel, src))
    _check_modules(root, out)
    return out


def _check_modules(root, files):
    """Refuse app modules that shadow the firmware's, and two files that become one module
    (foo.py and foo.mpy: the build compiles foo.py to foo.mpy, so one would replace the other
    unseen)."""
    seen = {}
    for rel, _ in files:
        if not rel.endswith((".py", ".mpy")) or rel in ("main.py", "boot.py"):
            continue
        stem = rel.rsplit(".", 1)[0]
        top = stem.removeprefix("lib/").split("/")[0]
        if top in OWN_MODULES:
            raise ZeroburnError(
                f"--app {root}: {rel} would shadow zeroburn's own module {top!r} on the board; "
                "rename it"
            )
        if stem in seen:
            raise ZeroburnError(
                f"--app {root}: {seen[stem]} and {rel} are the same module on the board "
                "(a .py is compiled to .mpy): keep one"
            )
        seen[stem] = rel


# ---- zeroburn init-project ---------------------------------------------------------------

MAIN_PY = """\
# main.py: your application. zeroburn runs the device's life (Wi-Fi, registration, the stored
# token, telemetry, reconnects); you hand it your sensors. What sensors.read() returns is sent
# as "sensors" in every telemetry message. Safe mode (file 'safemode' or the button held at
# boot) still works: app.main() checks it first. otaboot picks the version an update over the
# air installed, and takes the board back to the previous one if this one crashes on probation
# (docs/ota.md in the zeroburn repository): keep those lines around your code. An update
# (`zeroburn ota build --app`) replaces your modules but never this file: keep it to wiring.
import otaboot

otaboot.select()
del otaboot
try:
    from zeroburn import app

    import sensors

    app.main(sensors=sensors.Example().read)
except Exception as e:
    __import__("otaboot").done(e)
    raise
__import__("otaboot").done("returned without a cloud session")
"""

SENSORS_PY = """\
# sensors.py: an example driver, the pattern for your own. read() is called once per telemetry
# sample and returns a small dict of numbers or strings. It must not block for long (the
# watchdog is running) and may raise: the firmware logs the error and sends the sample anyway.
import machine

BUTTON_PIN = 0  # BOOT on most ESP32 dev boards (active low); put your sensor's pins here


class Example:
    def __init__(self, pin=BUTTON_PIN):
        self.pin = machine.Pin(pin, machine.Pin.IN, machine.Pin.PULL_UP)
        self.count = 0

    def read(self):
        self.count += 1
        return {"button": 1 - self.pin.value(), "count": self.count}
"""

GITIGNORE = """\
# device configs hold secrets: never commit them
config.json
*.config.json
"""

README_MD = """\
# {name}

An application for ESP32 boards running zeroburn (MicroPython, Alibaba Cloud IoT).

- `main.py`: runs at boot; hands `sensors.Example().read` to `app.main()`.
- `sensors.py`: the example driver; write yours the same way (add more files as you like:
  every file here goes to the board's root, except notes `*.md`/`*.txt`, dot-files and configs).
- `config.example.json`: every config field; copy it to `config.json` and fill it in
  (`config.json` is git-ignored: it holds the product secret).

Run it on a virtual board against the local platform emulator (from the zeroburn checkout):

    zeroburn platform product add                 # once; prints the productKey
    zeroburn board run --flash build/myboard --app {path} \\
        --platform .zeroburn/platform --product-key PK --until-messages 3 --timeout 120

Flash it onto a real board:

    zeroburn config check config.json
    zeroburn flash --device /dev/ttyUSB0 --board esp32-devkitc --config config.json --app {path}
"""


def init_project(target, force=False):
    """Write an example application folder; returns the paths written. Existing files are
    never overwritten without force (an edited main.py is the user's work)."""
    from host_tools.build import config_cmd

    root = Path(target)
    files = {
        "main.py": MAIN_PY,
        "sensors.py": SENSORS_PY,
        ".gitignore": GITIGNORE,
        "README.md": README_MD.format(name=root.resolve().name, path=target),
        "config.example.json": json.dumps(config_cmd.example(), indent=2) + "\n",
    }
    if root.exists() and not root.is_dir():
        raise ZeroburnError(f"{root} exists and is not a folder")
    clash = [n for n in files if (root / n).exists()]
    if clash and not force:
        raise ZeroburnError(
            f"{root} already has {', '.join(clash)}: nothing written (use --force to overwrite)"
        )
    root.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in files.items():
        (root / name).write_text(text)
        written.append(root / name)
    return written


def configure(parser, name):
    parser.add_argument("dir", metavar="DIR", help="folder to create (or fill) with the example")
    parser.add_argument("--force", action="store_true", help="overwrite the example's files")
    parser.set_defaults(handler=_init_project)


def _init_project(args):
    for path in init_project(args.dir, args.force):
        print(f"wrote {path}")
    print(
        f"next: edit {Path(args.dir) / 'sensors.py'}, then run it on a virtual board with "
        f"`zeroburn board run --flash build/myboard --app {args.dir} --platform .zeroburn/platform "
        "--product-key PK` or flash it with `zeroburn flash ... --app "
        f"{args.dir}`"
    )
    return 0

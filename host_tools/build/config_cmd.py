# `zeroburn config init|check`: write an example or a local-platform device config, check one;
# the rules themselves live in the firmware's config module (imported here, never copied).
import json
import os
import subprocess
import sys
from pathlib import Path

from host_tools import paths
from host_tools.errors import ZeroburnError
from host_tools.platform.local import platform_ca, platform_port, platform_secret

# Secrets may stay out of the file: these variables fill them in when the file leaves them out.
# There is deliberately no command-line option for them (shell history, `ps`).
SECRET_ENV = {
    "product_secret": "ZEROBURN_PRODUCT_SECRET",
    "wifi_password": "ZEROBURN_WIFI_PASSWORD",
}
PLATFORM_REGION = "cn-shanghai"

# One line a field, shown beside it in `config init` output (key "_help"); the config.json
# reference (docs/firmware.md section 2) says more. A test keeps this in step with the firmware's schema.
HELP = {
    "product_key": "ProductKey from the Aliyun IoT console (Products > your product)",
    "product_secret": "ProductSecret of the product (secret; or set ZEROBURN_PRODUCT_SECRET)",
    "region": "legacy public instance region, e.g. cn-shanghai (one of region/instance_id/host)",
    "instance_id": "Enterprise instance id, e.g. iot-06z00abc1234567 (Instances > overview)",
    "host": "explicit MQTT endpoint host; wins over region and instance_id",
    "port": "MQTT over TLS port: 1883 (GlobalSign root) or 8883 (Aliyun IoT root)",
    "ca_file": "PEM bundle of trusted roots on the board (zeroburn flash --ca replaces it)",
    "signmethod": "registration signature: hmacsha1, hmacsha256 or hmacmd5",
    "securemode": "registration securemode: 2 legacy public, -2 Enterprise (default: derived)",
    "device_name_prefix": "text put before the chip id in the deviceName (0-20 chars)",
    "wifi_ssid": "Wi-Fi network name",
    "wifi_password": "Wi-Fi password (secret; or set ZEROBURN_WIFI_PASSWORD)",
    "ntp_host": "NTP server used to set the clock before the first TLS connection",
    "interval_s": "seconds between telemetry samples (1-86400)",
    "keepalive_s": "MQTT keepalive seconds (30-1200, Aliyun's range)",
    "mode": "continuous (stay online) or duty_cycle (wake, send, deep sleep)",
    "alink": "also post each sample as an Alink thing-model property post",
    "wdt_s": "hardware watchdog timeout seconds (20-3600, at least connect_s + 5)",
    "connect_s": "one connection's deadline: DNS + TCP + TLS handshake + CONNACK (5-120 s)",
    "buffer_max": "samples kept while offline, oldest dropped first",
    "journal_s": "flash journal for power cuts: 0 off, N = write queued samples after N s",
    "max_connwl_refusals": "login refusals in a row before the token is wiped and re-registered",
    "reg_backoff_s": "first wait after a refused registration; doubles up to 6 h",
    "safe_mode_pin": "GPIO of a safe-mode button (active low); flash fills in the board's BOOT",
}
# Example values that differ from the schema's defaults; null = the user must fill it in (so
# an untouched example fails `config check` with "... is required") or the default applies.
EXAMPLE = {
    "product_key": None,
    "product_secret": None,
    "instance_id": None,
    "wifi_ssid": None,
    "wifi_password": None,
}


def schema():
    """The firmware's config module (firmware/zeroburn/config.py), imported under CPython."""
    fw = str(paths.FIRMWARE)
    if fw not in sys.path:
        sys.path.insert(0, fw)
    try:
        from zeroburn import config
    except ImportError as e:
        raise ZeroburnError(f"cannot import the firmware's config schema from {fw}: {e}")
    return config


def with_env_secrets(d, env=None):
    """(config with secrets filled from the environment where the file leaves them out,
    {secret key: where its value came from})."""
    env = os.environ if env is None else env
    d = dict(d)
    sources = {}
    for key, var in SECRET_ENV.items():
        if d.get(key) is not None:
            sources[key] = "the file"
        elif env.get(var):
            d[key] = env[var]
            sources[key] = var
    return d, sources


def read(path):
    """The JSON object in a config file, as is; ValueError with what to fix."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ValueError(f"{path} does not exist: write one with `zeroburn config init -o {path}`")
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror}")
    try:
        d = json.loads(text)
    except ValueError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); check quotes and commas")
    if not isinstance(d, dict):
        raise ValueError(f"{path} must hold one JSON object of key: value pairs")
    return d


# Valid stand-ins for required fields while one field is checked on its own (all_errors).
_STAND_INS = {"product_key": "a", "product_secret": "a", "wifi_ssid": "a", "region": "a"}


def _hint(msg):
    for key, var in SECRET_ENV.items():
        if msg.startswith(key + " is required"):
            msg += f" (put it in the file or set {var})"
    return msg


def all_errors(d):
    """Every problem of a config dict, not only the first the firmware's parse() stops at: each
    field is checked by parse() itself, on its own beside valid stand-ins, then the rules that
    join fields are checked with the fields that passed."""
    sch = schema()
    if not isinstance(d, dict):
        return ["config must be a JSON object of key: value pairs"]
    known = [f[0] for f in sch.fields()]
    errors = [
        f"unknown key {k!r} (known: {', '.join(sorted(known))})"
        for k in d
        if k not in known and not k.startswith("_")
    ]
    good = {}
    for key, kind, *_ in sch.fields():
        if d.get(key) is None and kind != "S":
            continue
        probe: dict[str, object] = dict(_STAND_INS)
        if key in ("region", "instance_id", "host"):
            probe.pop("region")
        probe[key] = d.get(key)
        try:
            sch.parse(probe)
            good[key] = d[key]
        except ValueError as e:
            if str(e).startswith(key):
                errors.append(_hint(str(e)))
            else:  # needs another field: left to the joint check below
                good[key] = d[key]
    if not errors:
        try:
            sch.parse({**good, **{k: v for k, v in d.items() if k.startswith("_")}})
        except ValueError as e:
            errors.append(_hint(str(e)))
    return errors


def load(path, env=None):
    """Read a config file, fill secrets from the environment, validate with the firmware's
    schema. Returns (config dict, Config, secret sources); ValueError names the file and
    every problem in it."""
    d, sources = with_env_secrets(read(path), env)
    try:
        cfg = schema().parse(d)
    except ValueError as e:
        errors = all_errors(d) or [_hint(str(e))]
        if len(errors) == 1:
            raise ValueError(f"{path}: {errors[0]}")
        raise ValueError(
            f"{path}: {len(errors)} problems:\n" + "\n".join(f"  - {m}" for m in errors)
        )
    return d, cfg, sources


def masked(value):
    """How a secret is shown: never any of its characters."""
    if not value:
        return "(empty)"
    return f"******** ({len(value)} characters)"


def example():
    """A config with every field of the schema: defaults, or null where the user must fill in."""
    d: dict = {
        "_comment": [
            "zeroburn device config. Fill in the null values; check with `zeroburn config check`.",
            "Keys starting with _ are comments. Secrets may stay null here and come from the",
            "environment instead: " + ", ".join(SECRET_ENV.values()) + ".",
            "Set exactly one of region (legacy public), instance_id (Enterprise) or host.",
        ]
    }
    for key, _kind, default, *_ in schema().fields():
        d[key] = EXAMPLE.get(key, default)
    d["_help"] = dict(HELP)
    return d


# ---- the local platform emulator ---------------------------------------------------------


def platform_config(
    state_dir, product_key, product_secret=None, signmethod=None, port=None, **overrides
):
    """A device config for the local platform emulator in state_dir.

    The endpoint is the real-looking legacy host `<pk>.iot-as-mqtt.cn-shanghai.aliyuncs.com`
    (region cn-shanghai), which a virtual board's host map sends to 127.0.0.1; the platform's
    certificate covers it. The CA bundle to flash with it is the platform's `ca.pem`
    (Platform.ca_path); on the board it is `ca.pem` (ca_file). product_secret defaults to the
    one in the platform's SQLite state (pass another to test a wrong secret). ValueError says
    what to fix; the result passes the firmware's schema."""
    secret = (
        product_secret if product_secret is not None else platform_secret(state_dir, product_key)
    )
    d = {
        "product_key": product_key,
        "product_secret": secret,
        "region": PLATFORM_REGION,
        "port": port if port is not None else platform_port(state_dir),
        "ca_file": "ca.pem",
        "wifi_ssid": "zeroburn-virtual",
        "interval_s": 5,
    }
    if signmethod is not None:
        d["signmethod"] = signmethod
    d.update(overrides)
    schema().parse(d)
    return d


# ---- CLI -----------------------------------------------------------------------------------


def configure(parser, name):
    sub = parser.add_subparsers(dest="config_command", metavar="SUBCOMMAND")
    parser.set_defaults(handler=lambda args: parser.print_help() or 1)

    init = sub.add_parser(
        "init",
        help="write an example config (every field), or one for the local platform emulator",
        description="Write a device config. Secrets are never taken from the command line: "
        f"put them in the file or in {' / '.join(SECRET_ENV.values())}.",
    )
    init.add_argument("-o", "--output", required=True, metavar="FILE", help="file to write")
    init.add_argument("--force", action="store_true", help="overwrite FILE if it exists")
    init.add_argument(
        "--platform",
        metavar="STATE_DIR",
        help="fill it in for the local platform emulator with this state folder",
    )
    init.add_argument("--product-key", metavar="PK", help="with --platform: the product")
    init.add_argument(
        "--port", type=int, help="with --platform: its TLS port (default: read from its state)"
    )
    init.add_argument("--signmethod", help="with --platform: hmacsha1, hmacsha256 or hmacmd5")
    init.set_defaults(handler=_init)

    check = sub.add_parser("check", help="validate a config file (secrets are never shown)")
    check.add_argument("file", metavar="FILE")
    check.add_argument("--json", action="store_true", help="machine-readable result")
    check.add_argument(
        "--board", metavar="NAME", help="also check it against this board (e.g. its GPIOs)"
    )
    check.set_defaults(handler=_check)


def _git_ignored(path):
    """True/False inside a git checkout, None outside one (or without git)."""
    try:
        proc = subprocess.run(
            ["git", "check-ignore", "-q", path.name],
            cwd=path.parent,
            capture_output=True,
            timeout=20,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return {0: True, 1: False}.get(proc.returncode)  # 128: not a repository


def _write_new(path, text, force):
    """Write atomically, owner-only (configs hold secrets); never clobber without --force."""
    if path.exists() and not force:
        raise ZeroburnError(f"{path} exists; use --force to overwrite it")
    if path.is_dir():
        raise ZeroburnError(f"{path} is a folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _init(args):
    out = Path(args.output)
    if out.exists() and not args.force:
        raise ZeroburnError(f"{out} exists; use --force to overwrite it")
    if args.platform is None:
        if args.product_key or args.port or args.signmethod:
            raise ZeroburnError("--product-key, --port and --signmethod go with --platform")
        _write_new(out, json.dumps(example(), indent=2) + "\n", args.force)
        print(f"wrote {out}: fill in the null values, then `zeroburn config check {out}`")
        return 0
    if not args.product_key:
        raise ZeroburnError(
            "--platform needs --product-key (see `zeroburn platform product list "
            f"--state {args.platform}`)"
        )
    # this file holds the product secret: it must not land in a repository
    out.parent.mkdir(parents=True, exist_ok=True)
    if _git_ignored(out.resolve()) is False:
        raise ZeroburnError(
            f"{out} would hold a product secret but git does not ignore it: name it config.json "
            "or *.config.json, or write it outside the repository"
        )
    try:
        d = platform_config(
            args.platform, args.product_key, signmethod=args.signmethod, port=args.port
        )
    except ValueError as e:
        raise ZeroburnError(str(e))
    _write_new(out, json.dumps(d, indent=2) + "\n", args.force)
    ca = platform_ca(args.platform)
    print(f"wrote {out} for product {args.product_key} on the local platform (port {d['port']})")
    print(f"flash it with: zeroburn flash --device PORT --board virtual --config {out} --ca {ca}")
    return 0


def _check(args):
    try:
        d, cfg, sources = load(args.file)
        if getattr(args, "board", None):
            from host_tools.build import boards

            boards.check_config(d, boards.load(args.board))
    except ValueError as e:
        if args.json:
            print(json.dumps({"ok": False, "error": str(e)}))
        raise ZeroburnError(str(e))
    rows = {}
    secret_keys = set(schema().SECRET_FIELDS)
    for key, *_ in schema().fields():
        value = getattr(cfg, key)
        if key in secret_keys:
            where = sources.get(key)
            rows[key] = masked(value) + (f", from {where}" if where else "")
        else:
            rows[key] = value
    endpoint = f"{cfg.endpoint()}:{cfg.port}"
    if args.json:
        print(json.dumps({"ok": True, "endpoint": endpoint, "fields": rows}))
        return 0
    print(f"{args.file}: OK, endpoint {endpoint} (securemode {cfg.securemode})")
    width = max(map(len, rows))
    for key, value in rows.items():
        shown = value if key in secret_keys else json.dumps(value)
        print(f"  {key:<{width}}  {shown}")
    return 0

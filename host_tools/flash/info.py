# `zeroburn info`: what a board runs and holds (never its token), and the checks `flash`
# shares: can this MicroPython run the build, which deviceName the firmware will register as.
import json
import sys

from host_tools import paths
from host_tools.build import boards
from host_tools.errors import ZeroburnError
from host_tools.flash.link import BoardLink

# The firmware loads .mpy version 6 (MicroPython 1.19+) and needs MicroPython 1.22+.
MPY_VERSION = 6
MIN_MICROPYTHON = (1, 22)


def check_runtime(facts, board):
    """Refuse a board whose MicroPython cannot run this build (ZeroburnError)."""
    if facts.get("impl") != "micropython":
        raise ZeroburnError(
            f"the board runs {facts.get('impl')}, not MicroPython; the flash writes .mpy files "
            "(a virtual board: serve it with --runtime micropython)"
        )
    ver = tuple(facts.get("ver") or ())
    if facts.get("mpy") != MPY_VERSION or ver[:2] < MIN_MICROPYTHON:
        shown = ".".join(map(str, ver)) or "unknown"
        raise ZeroburnError(
            f"the board runs MicroPython {shown} (.mpy v{facts.get('mpy')}); zeroburn needs "
            f"{'.'.join(map(str, MIN_MICROPYTHON))} or newer: "
            "`zeroburn install-micropython --device PORT --board NAME --firmware FILE.bin`"
        )
    machine = facts.get("machine") or ""
    # "Generic ESP32 module with ESP32S3" on a board; a virtual board says "... with virtual"
    if " with " in machine:
        chip = machine.rsplit(" with ", 1)[1].strip().replace("-", "").lower()
        if chip in boards.CHIPS and chip != board.chip:
            raise ZeroburnError(
                f"the board says it is {machine!r}, not an {board.chip}: "
                f"pick the right --board ({', '.join(boards.names())})"
            )


def _firmware_module(name):
    fw = str(paths.FIRMWARE)
    if fw not in sys.path:
        sys.path.insert(0, fw)
    import importlib

    return importlib.import_module(f"zeroburn.{name}")


def device_name(uid_hex, prefix=""):
    """The deviceName the firmware registers as: the firmware's own rule (sign.device_name)."""
    return _firmware_module("sign").device_name(bytes.fromhex(uid_hex), prefix or "")


def info(device):
    """What the board holds; never its token."""
    with BoardLink(device) as link:
        facts = link.facts()
        out = {"device": device, **facts}
        out.update(link.info())
        prefix = (out.get("cfg") or {}).get("device_name_prefix", "")
        if facts.get("uid"):
            try:
                out["device_name"] = device_name(facts["uid"], prefix)
            except ValueError as e:
                out["device_name"] = None
                out["device_name_error"] = str(e)
        out["credentials"] = link.creds() if out.get("fw") else None
    return out


def _info(args):
    r = info(args.device)
    if args.json:
        print(json.dumps(r))
        return 0
    ver = ".".join(map(str, r.get("ver") or [])) or "?"
    rows = [
        ("device", r["device"]),
        ("micropython", f"{ver} (.mpy v{r.get('mpy')}) {r.get('machine') or ''}".strip()),
        ("unique id", r.get("uid") or "unknown"),
        ("deviceName", r.get("device_name") or r.get("device_name_error") or "unknown"),
        ("firmware", f"zeroburn {r['fw']}" if r.get("fw") else "not installed"),
    ]
    cfg = r.get("cfg")
    rows.append(("config", f"product {cfg['product_key']}" if cfg else "none on the board"))
    c = r.get("credentials")
    if c is None:
        rows.append(("credentials", "unknown (no firmware)"))
    else:
        if c["has"]:
            held = f"token stored for {c['dn']} (product {c['pk']}), not shown"
            if cfg and (c["pk"], c["dn"]) != (cfg["product_key"], r.get("device_name")):
                held += "; it does not match the config: the board will register again"
        else:
            held = "none: the board will register at its next boot"
        rows.append(("credentials", held))
        rows.append(("registrations", str(c["regs"])))
    if r.get("safemode"):
        rows.append(("safe mode", "on (file 'safemode'): the application does not start"))
    for k, v in rows:
        print(f"{k:<14}{v}")
    return 0

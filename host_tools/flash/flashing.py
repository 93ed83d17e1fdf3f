# `zeroburn flash`: check and stage everything, then copy only what changed onto the board over
# one board link, verify by sha256, reset, and follow the console until the board is online.
import json
import sys
import tempfile
import time
from pathlib import Path

from host_tools.build import boards
from host_tools.errors import ZeroburnError
from host_tools.flash.console import Console, Progress
from host_tools.flash.info import check_runtime, device_name
from host_tools.flash.link import LEGACY_DIRS, OWNED_DIRS, OWNED_UMQTT, BoardLink

OTA_SWITCH = ("zb/active.json", "zb/new/ok.json")


def board_config(config, board):
    """What goes into the board's config.json: comment keys dropped (RAM on the board), and the
    board's safe-mode button filled in where the config leaves safe_mode_pin empty."""
    out = {k: v for k, v in config.items() if not k.startswith("_")}
    if out.get("safe_mode_pin") is None:
        out.pop("safe_mode_pin", None)
        if board.safe_mode_pin is not None:
            out["safe_mode_pin"] = board.safe_mode_pin
    boards.check_config(out, board)
    return out


def plan_copy(staged, on_board):
    """(paths to copy, paths already identical) from {path: sha256} staged and on the board."""
    copy = sorted(p for p, digest in staged.items() if on_board.get(p) != digest)
    same = sorted(p for p in staged if p not in copy)
    return copy, same


def owned(path):
    """Whether a file on the board belongs to zeroburn's library (link.OWNED_DIRS)."""
    folder, _, name = path.rpartition("/")
    if folder not in OWNED_DIRS and not any(path.startswith(d + "/") for d in OWNED_DIRS):
        return False
    return not folder.endswith("umqtt") or name in OWNED_UMQTT


def stale_files(staged, board_files):
    """Files in the firmware's own folders on the board that this build does not produce."""
    return sorted(f for f in board_files if owned(f) and f not in staged)


def _ca_text(path, progress):
    from host_tools.build import cabundle

    if path is None:
        text, origin = cabundle.aliyun_bundle(), "Aliyun roots (from aliyun-iot-linkkit)"
    else:
        try:
            text, origin = Path(path).read_text(), str(path)
        except OSError as e:
            raise ZeroburnError(f"cannot read the CA bundle {path}: {e.strerror}")
    try:
        certs, warnings = cabundle.check_bundle(text, origin)
    except ValueError as e:
        raise ZeroburnError(str(e))
    for w in warnings:
        progress.say(f"zeroburn: warning: {w}")
    return (text if path is None else cabundle.to_pem(certs)), origin


def plural(n, word):
    return f"{n} {word}" + ("" if n == 1 else "s")


def prepare(board_name, config_path, ca_path=None, progress=None, app=None):
    """Everything checked and staged before the board is touched: (board, config dict,
    {path: bytes}, {path: sha256}, CA origin). Raises ZeroburnError; writes nothing outside a
    temporary folder, which is gone when this returns (it held the product secret)."""
    from host_tools.build import config_cmd, staging

    progress = progress or Progress(enabled=False)
    board = boards.load(board_name)
    try:
        d, _cfg, _sources = config_cmd.load(config_path)
        d = board_config(d, board)
        config_cmd.schema().parse(d)
    except ValueError as e:
        raise ZeroburnError(str(e))
    ca, origin = _ca_text(ca_path, progress)
    progress.update("build")
    with tempfile.TemporaryDirectory(prefix="zeroburn-stage-") as tmp:
        hashes = staging.stage(
            tmp, board=board.name, config=d, ca_pem=ca, runtime="micropython", app=app
        )
        files = {rel: (Path(tmp) / rel).read_bytes() for rel in hashes}
    return board, d, files, hashes, origin


def flash(
    device,
    board_name,
    config_path,
    ca_path=None,
    wipe=False,
    timeout=120,
    follow=True,
    progress=None,
    console=None,
    app=None,
):
    """The whole flash; returns a result dict (see README). ZeroburnError on any failure.
    app: a user's application folder staged in place of the example main.py (or None)."""
    progress = progress or Progress(enabled=False)
    progress.update("check")
    board, config, files, hashes, ca_origin = prepare(
        board_name, config_path, ca_path, progress, app
    )
    result = {"device": device, "board": board.name, "ca": ca_origin}
    progress.update("connect")
    link = BoardLink(device).open()
    try:
        link.enter()
        facts = link.facts()
        check_runtime(facts, board)
        if facts.get("uid"):
            result["device_name"] = device_name(
                facts["uid"], config.get("device_name_prefix") or ""
            )
        if not board.virtual:
            link.arm_watchdog()
        progress.update("compare")
        seen = link.hashes(sorted(hashes))
        copy, same = plan_copy(hashes, seen["hashes"])
        stale = stale_files(hashes, seen["files"])
        total = sum(len(files[p]) for p in copy) or 1
        done = 0
        progress.update("copy", 0, plural(len(copy), "file"))
        # every folder down to each file (lib/ first, then lib/zeroburn): os.mkdir makes one
        dirs = {str(d) for p in copy for d in Path(p).parents if str(d) != "."}
        link.mkdirs(dirs)
        for p in copy:
            base = done
            link.write(
                p,
                files[p],
                lambda n, base=base, p=p: progress.update("copy", (base + n) / total, p),
            )
            done += len(files[p])
        # and what an interrupted earlier flash left: its half-written temporary files; and
        # the OTA loader's switch and pending switch (docs/ota.md): a version flashed over USB
        # wins over one an update installed (the version folders stay, unused)
        link.remove(stale + [p + ".zbnew" for p in sorted(hashes)] + list(OTA_SWITCH))
        link.rmdirs(LEGACY_DIRS)
        progress.update("verify")
        after = link.hashes(sorted(hashes))["hashes"]
        bad = [p for p in hashes if after.get(p) != hashes[p]]
        if bad:
            raise ZeroburnError(
                f"verification failed for {', '.join(bad)}: the board holds other bytes than "
                "were sent (full filesystem? run the flash again)"
            )
        result.update(
            copied=copy,
            unchanged=same,
            removed=stale,
            bytes_copied=sum(len(files[p]) for p in copy),
            verified=len(hashes),
        )
        if wipe:
            state = link.creds(wipe=True)
            result["credentials_wiped"] = state["has"]
            if state["has"]:
                progress.say(
                    "zeroburn: warning: stored token erased; the board registers again, which "
                    "uses one of Aliyun's 5 activation slots for its deviceName"
                )
        progress.update("reset")
        link.reset()
        if not follow:
            return result
        watch = Console()
        deadline = time.monotonic() + timeout
        for line in link.lines(deadline):
            if console:
                console(line)
            watch.feed(line)
            if watch.stage == "registered":
                how = "registered" if watch.registered else "stored token loaded"
                progress.update("credentials", detail=how)
            else:
                progress.update(watch.stage if watch.stage != "booting" else "reset")
            if watch.done:
                break
        result.update(
            registered=watch.registered,
            token_loaded=watch.token_loaded,
            online=watch.online,
            acked=watch.acked,
        )
        if watch.failure:
            raise ZeroburnError(f"the board reports a failure: {watch.failure}")
        if watch.acked is None:
            reached = {
                "booting": "it never registered nor loaded a token",
                "registered": "it has credentials but never came online",
                "online": "it is online but no telemetry was acknowledged",
            }[watch.stage]
            hint = f"; last warning: {watch.last_warning}" if watch.last_warning else ""
            raise ZeroburnError(
                f"files copied and verified, but after {timeout:g} s {reached}{hint}"
            )
        return result
    finally:
        link.close()


def _flash(args):
    progress = Progress()
    console = None if args.quiet else (lambda line: progress.say(f"board| {line}"))
    try:
        result = flash(
            args.device,
            args.board,
            args.config,
            ca_path=args.ca,
            wipe=args.wipe,
            timeout=args.timeout,
            follow=not args.no_follow,
            progress=progress,
            console=console,
            app=args.app,
        )
    except KeyboardInterrupt:
        progress.end()
        print(
            "\nzeroburn: flash interrupted. The board may hold a partial copy (*.zbnew files, "
            "old and new modules mixed): run the same `zeroburn flash` again; it copies what "
            "differs and removes the leftovers.",
            file=sys.stderr,
        )
        return 130
    finally:
        progress.end()
    if args.json:
        print(json.dumps(result))
        return 0
    n, m = len(result["copied"]), len(result["unchanged"])
    print(
        f"{args.device}: {plural(n, 'file')} copied ({result['bytes_copied']} bytes), "
        f"{m} unchanged, "
        f"{result['verified']} verified by sha256"
    )
    if result.get("acked") is not None:
        how = "registered" if result.get("registered") else "logged in with its stored token"
        print(
            f"{result.get('device_name')}: {how}, online, telemetry #{result['acked']} "
            "acknowledged"
        )
    return 0

# `zeroburn bench`: device-side and platform-side figures, with mosquitto and Aliyun's own SDK
# doing the same work as references, written as JSON and a PNG chart. Loopback only, bounded.
# The sections live in bench_platform, bench_peers and bench_device, the report in bench_report,
# what they share in bench_common.
import json
import shutil
import tempfile
import time
from pathlib import Path

from host_tools.errors import ZeroburnError
from host_tools.load import loadgen as lg
from host_tools.load.bench_common import log
from host_tools.load.bench_device import run_device
from host_tools.load.bench_peers import run_mosquitto, run_sdk
from host_tools.load.bench_platform import run_platform
from host_tools.load.bench_report import (
    check_targets,
    flatten,
    machine_info,
    plot,
    print_summary,
    ratios,
)
from host_tools.load.flood import run_flood

# How much work each profile does. Every load is bounded by these counts and by time limits.
PROFILES = {
    "full": {
        "scales": [1000, 4000],  # connected devices for the routing-latency runs
        "reg_concurrency": 32,
        "reg_time_limit": 90,
        "latency_seconds": 10,
        "rate_per_device": 1.0,  # msg/s per connected device during the latency runs
        "tp_clients": 100,
        "tp_per_client": 3000,
        "tp_window": 16,
        "tp_time_limit": 30,
        "sdk_messages": 20,
        "device_messages": 100,
        "heap_bisect": True,
    },
    "quick": {
        "scales": [100],
        "reg_concurrency": 16,
        "reg_time_limit": 30,
        "latency_seconds": 2,
        "rate_per_device": 2.0,
        "tp_clients": 10,
        "tp_per_client": 200,
        "tp_window": 8,
        "tp_time_limit": 10,
        "sdk_messages": 5,
        "device_messages": 10,
        "heap_bisect": False,
    },
}


def run(
    profile="full", sections=("platform", "mosquitto", "sdk", "device"), work=None, install=True
):
    """Run the bench; returns the results dict (also what --json writes)."""
    prof = PROFILES[profile]
    # Before any server starts: child processes inherit the limit. 4,000 TLS devices need
    # a descriptor each in the server and in the load client, plus the relays' pairs.
    nofile = lg.raise_nofile(2 * max(prof["scales"]) + 1000)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    t0 = time.monotonic()
    own_work = work is None
    work = Path(work or tempfile.mkdtemp(prefix="zeroburn-bench-"))
    results = {"profile": profile, "started": started, "machine": machine_info()}
    results["machine"]["nofile"] = nofile
    try:
        if "platform" in sections:
            results["platform"] = run_platform(prof, work)
            results["platform_flood"] = run_flood(work, quick=profile == "quick")
        if "mosquitto" in sections:
            results["mosquitto"] = run_mosquitto(prof, work, install)
        if "sdk" in sections:
            results["sdk"] = run_sdk(prof, work)
        if "device" in sections:
            results["device"] = run_device(prof, work)
    finally:
        if own_work:
            shutil.rmtree(work, ignore_errors=True)
    results["seconds"] = round(time.monotonic() - t0, 1)
    results["figures"] = flatten(results)
    results["ratios"] = ratios(results["figures"])
    ratio_keys = {f"ratios.{k}": v for k, v in results["ratios"].items()}
    results["targets"] = check_targets({**results["figures"], **ratio_keys})
    return results


SECTIONS = ("platform", "mosquitto", "sdk", "device")


def configure(parser, name):
    parser.add_argument("--json", metavar="FILE", help="write the results as JSON")
    parser.add_argument("--plot", metavar="FILE.png", help="write a PNG chart (matplotlib)")
    parser.add_argument(
        "--quick", action="store_true", help="small loads (seconds), for a smoke test"
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=SECTIONS,
        help="run only this section (repeatable); default: all",
    )
    parser.add_argument(
        "--no-install",
        action="store_true",
        help="never install mosquitto with apt-get (the comparison is then unavailable)",
    )
    parser.set_defaults(handler=_run)


def _run(args):
    results = run(
        "quick" if args.quick else "full",
        tuple(args.only or SECTIONS),
        install=not args.no_install,
    )
    print_summary(results)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
        log(f"bench: wrote {args.json}")
    if args.plot:
        try:
            plot(results, args.plot)
        except ImportError:
            raise ZeroburnError("matplotlib is missing: run `make setup` (it is pinned in dev)")
        log(f"bench: wrote {args.plot}")
    if not args.json:
        print(json.dumps(results, indent=2))
    return 0

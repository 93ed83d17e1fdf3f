# The bench's platform section: registrations/s over TLS, QoS 1 throughput, routing latency
# and memory per connection at scale, measured on `zeroburn platform serve` in its own process.
import asyncio
import gc
import json
import subprocess
import sys
from pathlib import Path

from host_tools.errors import ZeroburnError
from host_tools.load import loadgen as lg
from host_tools.load.bench_common import (
    CpuMeter,
    PlatformProcess,
    child_env,
    log,
    readline_with_timeout,
    throughput,
    unavailable,
)
from host_tools.paths import ROOT


def platform_routes(pk, creds):
    """The topic a device publishes its load and its timestamped probes to (its own
    user/update, which the observer of _latency_watcher subscribes to)."""
    return f"/{pk}/{creds['deviceName']}/user/update"


async def platform_section(plat, pk, ps, prof):
    """Registrations/s over TLS, QoS 1 throughput, latency at scale, memory per connection."""
    out: dict = {"available": True}
    ctx = lg.client_ssl_context(plat.ca_path)
    host = "127.0.0.1"
    n_total = max(prof["scales"])

    log(f"bench: {n_total} regnwl registrations over TLS ...")
    cpu = CpuMeter(plat.pid)
    reg = await lg.registrations(
        host,
        plat.mqtts_port,
        ctx,
        pk,
        ps,
        n_total,
        prefix="bench",
        concurrency=prof["reg_concurrency"],
        time_limit=prof["reg_time_limit"],
    )
    creds = reg.pop("creds")
    out["registrations"] = {
        "n": reg["ok"],
        "errors": reg["errors"],
        "seconds": round(reg["seconds"], 3),
        "per_s": round(reg["per_s"], 1),
        "concurrency": prof["reg_concurrency"],
        **cpu.shares(),
    }
    # What one core of the server does, whoever was the bottleneck (the client's TLS may be).
    share = out["registrations"]["server_cpu_share"]
    out["registrations"]["per_server_core_s"] = round(reg["per_s"] / share, 1) if share else None
    if not creds:
        raise ZeroburnError(f"no registration succeeded: {reg['errors']}")

    # QoS 1 throughput over plain TCP (the mosquitto comparison is plain TCP too).
    n_tp = min(prof["tp_clients"], len(creds))
    log(f"bench: QoS 1 throughput, {n_tp} connwl clients x {prof['tp_per_client']} ...")
    clients, errors, _ = await lg.connect_many(
        lambda i: lg.login(host, plat.mqtt_port, None, pk, creds[i]), n_tp
    )
    tp = await throughput(
        [(c, platform_routes(pk, creds[i])) for i, c in enumerate(clients)], plat.pid, prof
    )
    tp["clients"] = len(clients)
    tp["connect_errors"] = errors
    out["qos1_throughput"] = tp
    for c in clients:
        c.close()
    await asyncio.sleep(0.5)

    # Memory per connection and routing latency at each scale, over TLS as devices connect.
    await asyncio.sleep(0.5)
    rss_base = lg.rss_kib(plat.pid)
    out["rss_base_kib"] = rss_base
    connected = []
    out["scales"] = {}
    for n in sorted(prof["scales"]):
        n = min(n, len(creds))
        rate = prof["rate_per_device"]
        log(f"bench: {n} devices connected over TLS, latency at {rate} msg/s each ...")
        k0 = len(connected)
        more, errors, secs = await lg.connect_many(
            lambda i, k=k0: lg.login(host, plat.mqtts_port, ctx, pk, creds[k + i]),
            n - len(connected),
            concurrency=prof["reg_concurrency"],
            time_limit=prof["reg_time_limit"],
        )
        connected += more
        await asyncio.sleep(1.0)
        rss = lg.rss_kib(plat.pid)
        scale = {
            "connected": len(connected),
            "connect_errors": errors,
            "logins_per_s": round(len(more) / secs, 1) if secs else None,
            "rss_kib": rss,
            "rss_per_connection_kib": round((rss - rss_base) / max(1, len(connected)), 2),
        }
        observer = _start_observer(plat, pk, prof["latency_seconds"] + 3)
        pairs = [(c, platform_routes(pk, creds[i])) for i, c in enumerate(connected)]
        cpu = CpuMeter(plat.pid)
        # This one process plays every device: a full collection of its heap (thousands of
        # TLS connections) would pause them all at once and send their next messages as one
        # burst, which real devices never do. Its heap is frozen for the run instead.
        gc.collect()
        gc.freeze()
        try:
            pub = await lg.paced_publishing(
                pairs, prof["rate_per_device"], prof["latency_seconds"], lg.LatencyProbe.payload
            )
        finally:
            gc.unfreeze()
        scale.update(cpu.shares())
        scale["published"] = pub
        seen = await asyncio.to_thread(_observer_result, observer)
        scale["latency_ms"] = seen["latency_ms"]
        scale["latency_p99_by_second"] = seen["p99_by_second"]
        out["scales"][str(n)] = scale
    for c in connected:
        c.close()
    out["rss_per_connection_kib"] = out["scales"][str(len(connected))]["rss_per_connection_kib"]
    return out


def _start_observer(plat, pk, seconds):
    """The emulator's observer (a back-end subscriber, like Aliyun's server-side subscription)
    on every device's user/update, over verified TLS, in a process of its own: what it
    receives, minus the send time stamped in the payload, is the routing latency."""
    env = child_env()
    env["ZB_OBSERVER_PASSWORD"] = plat.observer_password
    topic = f"/{pk}/+/user/update"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "host_tools.load.loadgen",
            "observe",
            str(plat.mqtts_port),
            str(plat.ca_path),
            "observer",
            topic,
            str(seconds),
        ],
        stdout=subprocess.PIPE,
        cwd=ROOT,
        env=env,
    )
    line = readline_with_timeout(proc.stdout, 20)
    if line != "ready":
        proc.kill()
        raise ZeroburnError(f"the latency observer did not start: {line}")
    return proc


def _observer_result(proc, timeout=60):
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise ZeroburnError("the latency observer did not finish")
    result = json.loads(out.decode().strip().splitlines()[-1])
    if "error" in result:
        raise ZeroburnError(f"latency observer: {result['error']}")
    return result


def run_platform(prof, work):
    state = Path(work) / "platform"
    try:
        with PlatformProcess(state) as plat:
            pk, ps = plat.add_product()
            log(f"bench: platform pid {plat.pid} on ports {plat.mqtt_port}/{plat.mqtts_port}")
            return asyncio.run(platform_section(plat, pk, ps, prof))
    except (ZeroburnError, lg.LoadError, OSError, ValueError, KeyError) as e:
        log(f"bench: platform section failed: {e}")
        return unavailable(f"platform section failed: {e}")

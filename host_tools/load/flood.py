# Flood bench (issue 13): an honest device's PUBACK latency next to a device flooding large
# QoS 0 messages at line rate, against `zeroburn platform serve` in its own process, so the
# server's peak RSS is its own. Loopback only, bounded in count and time. Imports the platform
# package only.
import json
import os
import signal
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

from host_tools.paths import ROOT


def _pct(xs, q):
    xs = sorted(xs)
    return round(1000 * xs[min(len(xs) - 1, int(q * len(xs)))], 2) if xs else None


def _status_kib(pid, key):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return None


def _serve(state, limits_off, timeout):
    cmd = [sys.executable, "-m", "host_tools.cli", "platform", "serve", "--state", str(state)]
    cmd += ["--port", "0", "--tls-port", "0", "--linger", "2"]
    if limits_off:
        cmd += ["--uplink-qps", "0", "--uplink-bytes-per-s", "0"]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    log = open(Path(state).parent / f"serve-{'off' if limits_off else 'on'}.log", "wb")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, cwd=ROOT, env=env)
    log.close()
    stdout = proc.stdout
    assert stdout is not None  # stdout=PIPE
    out = []
    t = threading.Thread(target=lambda: out.append(stdout.readline()), daemon=True)
    t.start()
    t.join(timeout)
    if not out or not out[0]:
        _stop(proc)
        raise RuntimeError(f"`platform serve` not ready in {timeout} s")
    return proc, json.loads(out[0])


def _stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _honest(dev, topic, n, until=None, rate=None, cap=20_000):
    """QoS 1 publishes, each waiting for its PUBACK, back to back or `rate` a second (an honest
    device stays under the uplink limit): the latencies (s)."""
    lat = []
    start = time.perf_counter()
    while len(lat) < n or (until is not None and not until()):
        if rate:
            wait = start + len(lat) / rate - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
        t0 = time.perf_counter()
        dev.publish(topic, b'{"id":%d}' % len(lat), qos=1)
        lat.append(time.perf_counter() - t0)
        if len(lat) >= cap:
            break
    return lat


def measure_flood(
    work,
    limits_off=True,
    flood_messages=3000,
    message_bytes=60_000,
    honest_unloaded=200,
    time_limit=60.0,
):
    """One run; returns a dict of figures (ms, MB). limits_off: the flooder is held only by
    backpressure (the hard case); else by Aliyun's default uplink limits as well."""
    from host_tools.platform import codec
    from host_tools.platform.registry import Registry
    from host_tools.platform.testing import login, register

    state = Path(work) / f"flood-{'off' if limits_off else 'on'}" / "platform"
    state.mkdir(parents=True, exist_ok=True)
    proc, ready = _serve(state, limits_off, 60)
    try:
        reg_db = Registry(state)
        try:
            pk, ps = reg_db.add_product()
        finally:
            reg_db.close()
        plat = types.SimpleNamespace(
            mqtt_port=ready["mqtt"], mqtts_port=ready["mqtts"], ca_path=ready["ca"]
        )
        flooder = login(plat, register(plat, pk, ps, "flood-1"), tls=False)
        honest = login(plat, register(plat, pk, ps, "honest-1"), tls=False)
        honest.timeout = 30
        topic = f"/{pk}/honest-1/user/update"
        rss_before = _status_kib(proc.pid, "VmRSS")
        rate = None if limits_off else 20  # Aliyun's limit is 30 a second
        unloaded = _honest(honest, topic, honest_unloaded if limits_off else 60, rate=rate)

        per_send = 8
        chunk = codec.encode_publish(f"/{pk}/flood-1/user/update", b"x" * message_bytes)
        chunk *= per_send
        sent = [0]
        done = threading.Event()
        flooder.sock.settimeout(time_limit)
        t0 = time.monotonic()

        def flood():
            try:
                while sent[0] < flood_messages and time.monotonic() - t0 < time_limit:
                    flooder.sock.sendall(chunk)
                    sent[0] += per_send
            except OSError:
                pass  # cut by the server: the count says how far it got
            finally:
                done.set()

        th = threading.Thread(target=flood, daemon=True)
        th.start()
        loaded = _honest(honest, topic, 20, until=done.is_set, rate=rate)
        th.join(time_limit + 30)
        flood_s = time.monotonic() - t0
        flooder.disconnect()
        honest.disconnect()
        peak = _status_kib(proc.pid, "VmHWM")
        return {
            "available": True,
            "uplink_limits": "off" if limits_off else "aliyun defaults",
            "message_bytes": message_bytes,
            "flood_messages_sent": sent[0],
            "flood_seconds": round(flood_s, 2),
            "flood_mb_per_s": round(sent[0] * message_bytes / 1e6 / max(flood_s, 1e-9), 1),
            "honest_unloaded_p50_ms": _pct(unloaded, 0.5),
            "honest_unloaded_p99_ms": _pct(unloaded, 0.99),
            "honest_flood_p50_ms": _pct(loaded, 0.5),
            "honest_flood_p99_ms": _pct(loaded, 0.99),
            "honest_flood_acked": len(loaded),
            "honest_rate_per_s": rate or "back to back",
            "server_rss_before_mb": round(rss_before / 1024, 1) if rss_before else None,
            "server_peak_rss_mb": round(peak / 1024, 1) if peak else None,
        }
    finally:
        _stop(proc)


def run_flood(work, quick=False):
    """The bench's flood section: backpressure alone, then with Aliyun's default limits."""
    n = 600 if quick else 3000
    sections: dict[str, dict] = {}
    for name, off in (("backpressure", True), ("aliyun_limits", False)):
        try:
            sections[name] = measure_flood(work, limits_off=off, flood_messages=n)
        except (OSError, RuntimeError, TimeoutError, ConnectionError) as e:
            sections[name] = {"available": False, "reason": f"{type(e).__name__}: {e}"}
    return {"available": any(v.get("available") for v in sections.values()), **sections}


if __name__ == "__main__":  # python -m host_tools.load.flood [--quick]
    import tempfile

    with tempfile.TemporaryDirectory(prefix="zeroburn-flood-") as d:
        print(json.dumps(run_flood(d, quick="--quick" in sys.argv), indent=2))

# The bench's report: the headline figures under dotted keys, ratios to the references, the
# issue's targets, the machine it ran on, the summary on stderr and the PNG chart.
import os
import platform as pyplatform
from pathlib import Path

from host_tools.load.bench_common import log

# The targets: (key in the flat figures, comparison, limit, label).
TARGETS = [
    ("device.min_heap_kib", "<=", 32, "full device cycle in a 32 KiB heap or less"),
    ("device.mpy_kib", "<", 24, ".mpy under 24 KiB"),
    ("device.registration_mqtt_bytes", "<", 1024, "registration under 1 KiB on the wire (no TLS)"),
    ("ratios.qos1_throughput_vs_mosquitto", ">=", 0.5, "QoS 1 throughput >= 50 % of mosquitto"),
    ("platform.latency_4000_p99_ms", "<", 20, "4,000 devices connected, p99 routing < 20 ms"),
]


def flatten(results):
    """The headline figures under dotted keys (what targets, ratios and the chart read)."""
    f = {}
    p = results.get("platform", {})
    if p.get("available"):
        f["platform.registrations_per_s"] = p["registrations"]["per_s"]
        f["platform.registrations_per_server_core_s"] = p["registrations"].get("per_server_core_s")
        f["platform.qos1_per_s"] = p["qos1_throughput"]["per_s"]
        f["platform.qos1_cpu_us_per_msg"] = p["qos1_throughput"]["server_cpu_us_per_msg"]
        f["platform.rss_per_connection_kib"] = p.get("rss_per_connection_kib")
        for n, s in p.get("scales", {}).items():
            f[f"platform.latency_{n}_p50_ms"] = s["latency_ms"]["p50"]
            f[f"platform.latency_{n}_p99_ms"] = s["latency_ms"]["p99"]
    for case, r in results.get("platform_flood", {}).items():
        for k in ("honest_unloaded_p99_ms", "honest_flood_p99_ms", "server_peak_rss_mb"):
            if isinstance(r, dict) and r.get("available"):
                f[f"flood.{case}.{k}"] = r[k]
    m = results.get("mosquitto", {})
    if m.get("available"):
        f["mosquitto.qos1_per_s"] = m["qos1_throughput"]["per_s"]
        f["mosquitto.qos1_cpu_us_per_msg"] = m["qos1_throughput"]["server_cpu_us_per_msg"]
    s = results.get("sdk", {})
    if s.get("available"):
        for k in (
            "register_ms",
            "registration_wire_bytes",
            "registration_mqtt_bytes",
            "telemetry_wire_bytes",
            "telemetry_mqtt_bytes",
        ):
            f[f"sdk.{k}"] = s.get(k)
    d = results.get("device", {})
    if d.get("available"):
        for k in (
            "mpy_kib",
            "min_heap_kib",
            "peak_heap_kib",
            "heap_used_at_samples_kib",
            "registration_mqtt_bytes",
            "registration_wire_bytes",
            "telemetry_mqtt_bytes",
            "telemetry_wire_bytes",
            "register_ms",
            "boot_to_registered_ms",
            "boot_to_first_ack_ms",
            "duty_cycle_awake_ms",
        ):
            f[f"device.{k}"] = d.get(k)
    elif "mpy_kib" in d:
        f["device.mpy_kib"] = d["mpy_kib"]
    return {k: v for k, v in f.items() if v is not None}


def ratios(flat):
    def ratio(a, b):
        if flat.get(a) is None or not flat.get(b):
            return None
        return round(flat[a] / flat[b], 3)

    r = {
        "qos1_throughput_vs_mosquitto": ratio("platform.qos1_per_s", "mosquitto.qos1_per_s"),
        # CPU per message is what the server itself spends, independent of the load client.
        "qos1_cpu_per_msg_vs_mosquitto": ratio(
            "platform.qos1_cpu_us_per_msg", "mosquitto.qos1_cpu_us_per_msg"
        ),
        "register_time_vs_sdk": ratio("device.register_ms", "sdk.register_ms"),
        "registration_mqtt_bytes_vs_sdk": ratio(
            "device.registration_mqtt_bytes", "sdk.registration_mqtt_bytes"
        ),
        "registration_wire_bytes_vs_sdk": ratio(
            "device.registration_wire_bytes", "sdk.registration_wire_bytes"
        ),
    }
    return {k: v for k, v in r.items() if v is not None}


def check_targets(flat):
    ops = {"<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">=": lambda a, b: a >= b}
    out = []
    for key, op, limit, label in TARGETS:
        value = flat.get(key)
        status = "n/a" if value is None else ("pass" if ops[op](value, limit) else "miss")
        out.append(
            {
                "target": label,
                "key": key,
                "limit": f"{op} {limit}",
                "value": value,
                "status": status,
            }
        )
    return out


def machine_info():
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "mem_gib": mem,
        "os": f"{pyplatform.system()} {pyplatform.release()}",
        "python": pyplatform.python_version(),
    }


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    flat = results["figures"]
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    fig.suptitle(f"zeroburn bench ({results['profile']}) {results['started']}", fontsize=11)

    ax = axes[0][0]
    names, vals, colors = [], [], []
    for label, key, color in (
        ("ours", "platform.qos1_per_s", "tab:blue"),
        ("mosquitto", "mosquitto.qos1_per_s", "tab:gray"),
    ):
        if key in flat:
            names.append(label)
            vals.append(flat[key])
            colors.append(color)
    ax.bar(names, vals, color=colors)
    ax.set_title("QoS 1 publishes/s (same load client)")
    _annotate(ax, vals, "%.0f")

    ax = axes[0][1]
    scales = sorted(results.get("platform", {}).get("scales", {}), key=int)
    if scales:
        p50 = [flat.get(f"platform.latency_{n}_p50_ms") or 0 for n in scales]
        p99 = [flat.get(f"platform.latency_{n}_p99_ms") or 0 for n in scales]
        x = range(len(scales))
        ax.bar([i - 0.2 for i in x], p50, 0.4, label="p50")
        ax.bar([i + 0.2 for i in x], p99, 0.4, label="p99")
        ax.set_xticks(list(x), [f"{n} devices" for n in scales])
        ax.axhline(20, color="red", linestyle="--", linewidth=1, label="p99 target")
        ax.legend()
    ax.set_title("routing latency (ms)")

    ax = axes[1][0]
    names, vals = [], []
    for label, key in (
        ("firmware MQTT", "device.registration_mqtt_bytes"),
        ("SDK MQTT", "sdk.registration_mqtt_bytes"),
        ("firmware wire", "device.registration_wire_bytes"),
        ("SDK wire", "sdk.registration_wire_bytes"),
    ):
        if key in flat:
            names.append(label)
            vals.append(flat[key])
    ax.bar(names, vals, color="tab:green")
    ax.axhline(1024, color="red", linestyle="--", linewidth=1)
    ax.set_title("bytes for one registration (wire = with TLS)")
    _annotate(ax, vals, "%.0f")

    ax = axes[1][1]
    rows = results.get("targets", [])
    ax.axis("off")
    text = "\n".join(
        f"[{t['status']:>4}] {t['target']}: {t['value'] if t['value'] is not None else '-'}"
        for t in rows
    )
    ratio_text = "\n".join(f"{k} = {v}" for k, v in results.get("ratios", {}).items())
    ax.text(
        0,
        1,
        "targets\n" + text + "\n\nratios\n" + ratio_text,
        va="top",
        family="monospace",
        fontsize=8,
    )
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _annotate(ax, vals, fmt):
    for i, v in enumerate(vals):
        ax.text(i, v, fmt % v, ha="center", va="bottom", fontsize=8)


def print_summary(results):
    log(f"bench: {results['profile']} run took {results['seconds']} s")
    for k, v in results["figures"].items():
        log(f"  {k:45} {v}")
    for k, v in results["ratios"].items():
        log(f"  ratio {k:39} {v}")
    for t in results["targets"]:
        log(f"  [{t['status']:>4}] {t['target']} ({t['limit']}): {t['value']}")
    for name in ("platform", "platform_flood", "mosquitto", "sdk", "device"):
        sec = results.get(name)
        if sec and not sec.get("available"):
            log(f"  {name}: unavailable: {sec.get('reason')}")

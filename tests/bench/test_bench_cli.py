# `zeroburn bench --quick` on the platform and mosquitto sections: valid JSON with the expected
# keys, targets and ratios computed from what was measured (no timing asserted).
import json
import subprocess
import sys

from host_tools.paths import ROOT


def test_bench_quick_platform_section_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "host_tools.cli",
            "bench",
            "--quick",
            "--only",
            "platform",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads(out.read_text())
    assert r["profile"] == "quick"
    assert {"cpu", "cores", "python"} <= set(r["machine"])
    p = r["platform"]
    assert p["available"] is True, p
    reg = p["registrations"]
    assert reg["n"] == 100 and reg["errors"] == {} and reg["per_s"] > 0
    tp = p["qos1_throughput"]
    assert tp["acked"] == 10 * 200 and tp["connect_errors"] == {}
    scale = p["scales"]["100"]
    assert scale["connected"] == 100
    assert scale["published"]["acked"] == scale["published"]["sent"] > 0
    assert scale["latency_ms"]["n"] > 0 and scale["latency_ms"]["p99"] is not None
    assert p["rss_per_connection_kib"] is not None
    figures = r["figures"]
    assert figures["platform.qos1_per_s"] == tp["per_s"]
    assert "platform.latency_100_p99_ms" in figures
    keys = [t["key"] for t in r["targets"]]
    assert "ratios.qos1_throughput_vs_mosquitto" in keys
    # sections not asked for are absent, so their targets are "n/a", never a made-up pass
    assert "mosquitto" not in r
    statuses = {t["key"]: t["status"] for t in r["targets"]}
    assert statuses["ratios.qos1_throughput_vs_mosquitto"] == "n/a"

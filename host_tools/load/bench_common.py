# What the parts of `zeroburn bench` share: the platform in a process of its own, the load both
# brokers get (QoS 1 throughput with CPU shares), logging, and the "unavailable" section.
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from host_tools.errors import ZeroburnError
from host_tools.load import loadgen as lg
from host_tools.paths import ROOT


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def unavailable(reason):
    return {"available": False, "reason": reason}


class PlatformProcess:
    """`zeroburn platform serve` in its own process, so its RSS and CPU are measured alone."""

    def __init__(self, state_dir):
        self.state_dir = Path(state_dir)
        self.proc: subprocess.Popen | None = None
        self.mqtt_port = self.mqtts_port = None
        self.ca_path: str | None = None

    def _cli(self, *args):
        return [sys.executable, "-m", "host_tools.cli", "platform", *args]

    def start(self, timeout=30):
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.observer_password = secrets.token_hex(12)
        cmd = self._cli("serve", "--state", str(self.state_dir), "--port", "0", "--tls-port", "0")
        if self._serve_has("--observer-password"):
            cmd += ["--observer-password", self.observer_password]
        else:
            # The same server class `serve` runs, with the observer setting the bench needs
            # to watch routing; still a process of its own, measured alone.
            cmd = [sys.executable, "-c", _SERVE_WITH_OBSERVER, str(self.state_dir)]
        self.stderr = open(self.state_dir / "serve.log", "wb")
        env = child_env()
        env["ZB_OBSERVER_PASSWORD"] = self.observer_password
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=self.stderr, cwd=ROOT, env=env
        )
        line = readline_with_timeout(self.proc.stdout, timeout)
        if not line:
            exited = self.proc.poll()
            self.stop()
            log_tail = (self.state_dir / "serve.log").read_text(errors="replace")[-800:].strip()
            what = (
                f"exited with code {exited}" if exited is not None else f"not ready in {timeout} s"
            )
            raise ZeroburnError(f"`zeroburn platform serve` {what}: {log_tail}")
        ready = json.loads(line)
        self.mqtt_port, self.mqtts_port, self.ca_path = ready["mqtt"], ready["mqtts"], ready["ca"]
        return self

    def _serve_has(self, option):
        try:
            proc = subprocess.run(
                self._cli("serve", "--help"),
                capture_output=True,
                text=True,
                cwd=ROOT,
                env=child_env(),
                timeout=30,
            )
        except subprocess.TimeoutExpired:
            return False
        return option in proc.stdout

    @property
    def pid(self):
        if self.proc is None:
            raise ZeroburnError("the platform process is not started")
        return self.proc.pid

    def add_product(self):
        """Create a product in the platform's SQLite (the running server sees it at once)."""
        from host_tools.platform.registry import Registry

        reg = Registry(self.state_dir)
        try:
            return reg.add_product()
        finally:
            reg.close()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if getattr(self, "stderr", None):
            self.stderr.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


_SERVE_WITH_OBSERVER = """
import json, os, signal, sys, threading
from host_tools.platform.server import Platform
plat = Platform(sys.argv[1], mqtt_port=0, mqtts_port=0, uplink_qps=0, uplink_bytes_per_s=0,
                observer_password=os.environ["ZB_OBSERVER_PASSWORD"])
plat.start()
print(json.dumps({"mqtt": plat.mqtt_port, "mqtts": plat.mqtts_port, "ca": plat.ca_path}),
      flush=True)
done = threading.Event()
signal.signal(signal.SIGTERM, lambda *a: done.set())
signal.signal(signal.SIGINT, lambda *a: done.set())
while not done.wait(1):
    pass
plat.stop()
"""


def child_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def readline_with_timeout(stream, timeout):
    out = []
    t = threading.Thread(target=lambda: out.append(stream.readline()), daemon=True)
    t.start()
    t.join(timeout)
    return out[0].decode().strip() if out else None


class CpuMeter:
    """CPU used by the server process and by this (load client) process since creation, as a
    share of one core over the wall time: who was the bottleneck."""

    def __init__(self, server_pid):
        self.pid = server_pid
        self.t0 = time.perf_counter()
        self.server0 = lg.cpu_seconds(server_pid)
        self.client0 = time.process_time()

    def shares(self):
        wall = max(1e-9, time.perf_counter() - self.t0)
        return {
            "server_cpu_share": round((lg.cpu_seconds(self.pid) - self.server0) / wall, 3),
            "client_cpu_share": round((time.process_time() - self.client0) / wall, 3),
        }


async def throughput(clients_topics, pid, prof):
    meter = CpuMeter(pid)
    cpu0 = lg.cpu_seconds(pid)
    r = await lg.publish_throughput(
        clients_topics, prof["tp_per_client"], prof["tp_window"], prof["tp_time_limit"]
    )
    cpu = lg.cpu_seconds(pid) - cpu0
    r.update(meter.shares())
    r["server_cpu_s"] = round(cpu, 3)
    r["server_cpu_us_per_msg"] = round(cpu / r["acked"] * 1e6, 2) if r["acked"] else None
    r["per_server_core_s"] = round(r["acked"] / cpu, 1) if cpu else None
    r["per_s"] = round(r["per_s"], 1)
    r["seconds"] = round(r["seconds"], 3)
    return r

# The bench's reference peers doing the same work as ours: mosquitto (QoS 1 throughput, same
# load client) and Aliyun's own Python SDK (regnwl + connwl + publishes, bytes on the wire).
import asyncio
import json
import subprocess
import threading
import time
from pathlib import Path

from host_tools.errors import ZeroburnError
from host_tools.load import loadgen as lg
from host_tools.load.bench_common import PlatformProcess, log, throughput, unavailable


class Mosquitto:
    """Debian's mosquitto on 127.0.0.1, a free port, plain TCP, anonymous, no persistence."""

    def __init__(self, exe, work_dir):
        self.exe = exe
        self.dir = Path(work_dir)
        self.port = None
        self.proc = None

    def start(self, timeout=10):
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = lg.free_port()
        conf = self.dir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence false\n"
            "log_dest none\n"
            "max_inflight_messages 100\n"
            "max_queued_messages 100000\n"
        )
        self.proc = subprocess.Popen([self.exe, "-c", str(conf)], stderr=subprocess.PIPE)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                err = (self.proc.communicate()[1] or b"").decode(errors="replace").strip()
                raise ZeroburnError(f"mosquitto exited at start: {err}")
            try:
                import socket

                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise ZeroburnError(f"mosquitto did not listen within {timeout} s")

    @property
    def pid(self):
        if self.proc is None:
            raise ZeroburnError("mosquitto is not started")
        return self.proc.pid

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


async def mosquitto_section(mosq, prof):
    out = {"available": True, "port": mosq.port}
    n_tp = prof["tp_clients"]
    clients, errors, _ = await lg.connect_many(
        lambda i: lg.plain_connect("127.0.0.1", mosq.port, f"bench{i:06d}"), n_tp
    )
    tp = await throughput(
        [(c, f"/pk/bench{i:06d}/user/update") for i, c in enumerate(clients)], mosq.pid, prof
    )
    tp["clients"] = len(clients)
    tp["connect_errors"] = errors
    out["qos1_throughput"] = tp
    for c in clients:
        c.close()
    return out


def run_mosquitto(prof, work, install=True):
    from host_tools import sysdeps

    if install:
        exe, reason = sysdeps.ensure_mosquitto(log=log)
    else:
        exe = sysdeps.find_mosquitto()
        reason = None if exe else "mosquitto is not installed"
    if exe is None:
        log(f"bench: mosquitto comparison unavailable: {reason}")
        return unavailable(reason)
    mosq = Mosquitto(exe, Path(work) / "mosquitto")
    try:
        mosq.start()
        log("bench: mosquitto reference ...")
        return asyncio.run(mosquitto_section(mosq, prof))
    except (ZeroburnError, lg.LoadError, OSError) as e:
        return unavailable(f"mosquitto run failed: {e}")
    finally:
        mosq.stop()


def sdk_cycle(pk, ps, dn, port, ca_pem, messages, relays, timeout=30):
    """Aliyun's Python SDK (aliyun-iot-linkkit): regnwl, then connwl and QoS 1 publishes.

    `relays` are ByteRelay-like objects whose counts are read per phase (reset between).
    Returns timings and byte counts; raises ZeroburnError when the SDK does not get through.
    """
    import logging

    from linkkit import linkkit

    logging.getLogger("linkkit").setLevel(logging.CRITICAL)
    logging.getLogger("Paho").setLevel(logging.CRITICAL)
    out = {}

    def make(**kw):
        lk = linkkit.LinkKit(host_name="cn-shanghai", product_key=pk, device_name=dn, **kw)
        lk.disable_logger()
        lk.config_mqtt(port=port, endpoint="localhost", cadata=ca_pem, check_hostname=True)
        return lk

    for r in relays:
        r.reset()
    reply = {}
    got = threading.Event()
    lk = make(device_secret="", auth_type="regnwl", product_secret=ps)

    def on_reply(code, client_id, username, password):
        reply.update(code=code, client_id=client_id, username=username, password=password)
        got.set()

    lk.on_device_dynamic_register_nwl_reply = on_reply
    t0 = time.perf_counter()
    lk.connect_async()
    ok = got.wait(timeout)
    out["register_ms"] = round((time.perf_counter() - t0) * 1000, 1)
    _wait_closed(relays, timeout=5)
    try:
        lk.destroy()
    except Exception:
        pass
    if not ok or reply.get("code") != 0:
        raise ZeroburnError(
            f"the SDK did not register within {timeout} s: code {reply.get('code')}"
        )
    out["registration"] = [r.counts() for r in relays]

    for r in relays:
        r.reset()
    connected = threading.Event()
    acked = []
    all_acked = threading.Event()
    lk = make(
        device_secret="",
        username=reply["username"],
        client_id=reply["client_id"],
        password=reply["password"],
    )
    lk.on_connect = lambda session_flag, rc, userdata: connected.set()

    def on_pub(mid, userdata):
        acked.append(mid)
        if len(acked) >= messages:
            all_acked.set()

    lk.on_publish_topic = on_pub
    t0 = time.perf_counter()
    lk.connect_async()
    if not connected.wait(timeout):
        lk.destroy()
        raise ZeroburnError(f"the SDK did not log in (connwl) within {timeout} s")
    out["login_ms"] = round((time.perf_counter() - t0) * 1000, 1)
    login_counts = [r.counts() for r in relays]
    topic = f"/{pk}/{dn}/user/update"
    t0 = time.perf_counter()
    for i in range(messages):
        payload = json.dumps({"id": i, "params": {"temp": 21.5, "hum": 40}})
        lk.publish_topic(topic, payload, qos=1)
    all_acked.wait(timeout)
    out["publish_ms"] = round((time.perf_counter() - t0) * 1000, 1)
    out["acked"] = len(acked)
    after = [r.counts() for r in relays]
    lk.disconnect()
    try:
        lk.destroy()
    except Exception:
        pass
    out["login"] = login_counts
    out["per_message"] = [
        round((a["up"] + a["down"] - b["up"] - b["down"]) / max(1, len(acked)), 1)
        for a, b in zip(after, login_counts, strict=True)
    ]
    return out


def _wait_closed(relays, timeout):
    """Give the relays a moment to count the last bytes of a closing session (bounded)."""
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        now = [r.counts() for r in relays]
        if now == last:
            return
        last = now
        time.sleep(0.2)


def run_sdk(prof, work):
    """The SDK against our emulator through a raw relay and a TLS-terminating relay."""
    try:
        import linkkit  # noqa: F401
    except ImportError as e:
        return unavailable(f"aliyun-iot-linkkit is not importable: {e}")
    state = Path(work) / "platform-sdk"
    try:
        with PlatformProcess(state) as plat:
            pk, ps = plat.add_product()
            mqtt = lg.TlsTerminatingRelay(
                "127.0.0.1", plat.mqtts_port, plat.ca_path, "localhost", Path(work) / "relay"
            )
            with mqtt:
                with lg.ByteRelay("127.0.0.1", mqtt.port) as wire:
                    log("bench: Aliyun SDK regnwl + connwl + publishes ...")
                    r = sdk_cycle(
                        pk,
                        ps,
                        "sdkbench01",
                        wire.port,
                        mqtt.ca_pem,
                        prof["sdk_messages"],
                        [wire, mqtt],
                    )
    except (ZeroburnError, lg.LoadError, OSError, ValueError, KeyError) as e:
        return unavailable(f"SDK run failed: {e}")
    reg_wire, reg_mqtt = r["registration"]
    return {
        "available": True,
        "sdk": "aliyun-iot-linkkit 1.2.13 (paho-mqtt 1.6.1)",
        "register_ms": r["register_ms"],
        "login_ms": r["login_ms"],
        "registration_wire_bytes": reg_wire["up"] + reg_wire["down"],
        "registration_mqtt_bytes": reg_mqtt["up"] + reg_mqtt["down"],
        "registration_detail": {"wire": reg_wire, "mqtt": reg_mqtt},
        "messages": prof["sdk_messages"],
        "acked": r["acked"],
        "telemetry_wire_bytes": r["per_message"][0],
        "telemetry_mqtt_bytes": r["per_message"][1],
    }

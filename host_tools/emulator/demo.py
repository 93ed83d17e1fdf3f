# `make demo`: the local platform, one virtual board with a fresh flash, registration,
# telemetry, then a power cycle that logs straight back in with the stored token.
import json
import shutil
import sys

from host_tools.build.config_cmd import platform_config
from host_tools.emulator.board import VirtualBoard
from host_tools.errors import ZeroburnError
from host_tools.paths import PLATFORM_STATE, STATE
from host_tools.platform.server import Platform

DEMO_PRODUCT = "zbDemo00001"
DEMO_MAC = "24:0a:c4:12:34:56"
FIRST_MESSAGES = 3


def say(text):
    print(f"\n== {text}", flush=True)


def console(data):
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


def ensure_product(registry):
    if not any(p["product_key"] == DEMO_PRODUCT for p in registry.products()):
        registry.add_product(product_key=DEMO_PRODUCT)
    return DEMO_PRODUCT


def acked(board, n, timeout, start=0):
    for _ in range(n):
        m = board.wait_for(r"\[tel\] acked #\d+", timeout=timeout, start=start)
        start = board.lines.index(m.string, start) + 1
    return start


def main():
    flash = STATE / "boards" / "demo"
    shutil.rmtree(flash, ignore_errors=True)
    # Fixed loopback ports when free (so `zeroburn platform ...` shows the same state later).
    with Platform(PLATFORM_STATE, linger_s=15.0) as plat:
        pk = ensure_product(plat.registry)
        say(
            f"platform emulator on 127.0.0.1: MQTT {plat.mqtt_port}, MQTT over TLS "
            f"{plat.mqtts_port}, state in {PLATFORM_STATE}; product {pk}"
        )
        config = platform_config(PLATFORM_STATE, pk, port=plat.mqtts_port, interval_s=2)
        dn = DEMO_MAC.replace(":", "")
        if any(d["device_name"] == dn for d in plat.registry.devices(pk)):
            # A fresh flash registers again: free the activation slots of earlier demo runs,
            # as an operator would in the console (Aliyun allows 5 per deviceName).
            plat.registry.clear_device(pk, dn)
            say(f"cleared the clientIds earlier demo runs left for {dn} (operator action)")
        seen_events = len(plat.registry.events(device_name=dn))
        board = VirtualBoard(flash, mac=DEMO_MAC, runtime="micropython", console=console)
        board.install(config=config, ca_pem=plat.ca_path)
        say(f"virtual ESP32 (MAC {DEMO_MAC}) boots with a fresh flash: it has no token yet")
        try:
            board.start()
            board.wait_for(r"\[reg\] registered as", timeout=60)
            start = acked(board, FIRST_MESSAGES, timeout=60)
            say("power cut; the board boots again and logs in with the token stored in flash")
            board.power_cut(off=0.5)
            board.wait_for(r"\[mqtt\] online as", timeout=60, start=start)
            acked(board, 2, timeout=60, start=start)
        finally:
            board.stop()
        say("what the platform saw")
        device = plat.registry.device(pk, dn)
        events = plat.registry.events(device_name=dn)[seen_events:]
        registrations = sum(1 for e in events if e["kind"] == "register")
        logins = sum(1 for e in events if e["kind"] == "login")
        print(
            f"device {dn}: {device.get('status')}, {registrations} registration and "
            f"{logins} token logins in this run (the power cycle did not register again)"
        )
        topic = f"/{pk}/{dn}/user/update"
        for msg in plat.registry.messages(device_name=dn, topic=topic, limit=3):
            body = msg["payload"].decode("utf-8", "replace")
            print(f"  {msg['topic']}  {json.dumps(json.loads(body))[:110]}")
    say(
        "done. Platform state is left in .zeroburn/: try `zeroburn platform devices` and "
        "`zeroburn platform messages --limit 5` (after `. .venv/bin/activate`)"
    )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (ZeroburnError, TimeoutError) as e:
        print(f"zeroburn demo: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("\nzeroburn demo: interrupted (Ctrl-C); the board and the platform are stopped")
        sys.exit(130)

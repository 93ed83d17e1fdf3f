# `zeroburn platform`: serve the emulator and operate it like the Aliyun console.
import json
import logging
import resource
import signal
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from host_tools import paths
from host_tools.errors import ZeroburnError
from host_tools.platform import local
from host_tools.platform.registry import EVENT_KINDS

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883, "https": 8443}
# The ports a state folder's platform last listened on: a restart without --port/--tls-port
# gets them again, so boards configured with them find it (serve.json exists only while it runs).
PORTS_FILE = local.PLATFORM_PORTS_FILE


def _state(parser):
    parser.add_argument(
        "--state",
        metavar="DIR",
        default=str(paths.PLATFORM_STATE),
        help="platform state folder (default: %(default)s)",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def configure(parser, name):
    sub = parser.add_subparsers(dest="platform_command", metavar="SUBCOMMAND")
    parser.set_defaults(handler=lambda a: parser.print_help() or 1)

    p = sub.add_parser("serve", help="run the emulator until SIGINT/SIGTERM")
    _state(p)
    p.add_argument("--bind", default="127.0.0.1", help="address to listen on (%(default)s)")
    p.add_argument(
        "--port",
        type=int,
        help=f"MQTT port, TLS or plain TCP, 0 = any free (default: the one this state folder "
        f"used last, else {DEFAULT_PORTS['mqtt']})",
    )
    p.add_argument(
        "--tls-port",
        type=int,
        help=f"MQTT over TLS port, 0 = any free (default: the one this state folder used last, "
        f"else {DEFAULT_PORTS['mqtts']})",
    )
    p.add_argument(
        "--https-port",
        type=int,
        help=f"HTTPS registration port, 0 = any free (default: the one this state folder used "
        f"last, else {DEFAULT_PORTS['https']}; any free one when --tls-port is 0)",
    )
    p.add_argument(
        "--tls-chain",
        choices=("rsa", "ecdsa"),
        default="rsa",
        help="certificate chain: rsa (Aliyun's shape, default) or ecdsa (older zeroburn)",
    )
    p.add_argument("--tls13", action="store_true", help="offer TLS 1.3 too (default: 1.2 only)")
    p.add_argument(
        "--linger",
        type=float,
        default=15.0,
        metavar="S",
        help="close a registration session this many seconds after the reply, if the device "
        "has not (default: %(default)s)",
    )
    p.add_argument(
        "--uplink-qps",
        type=float,
        metavar="N",
        help="messages a device may publish per second, past it dropped (default: Aliyun's 30; "
        "0 = off)",
    )
    p.add_argument(
        "--uplink-bytes-per-s",
        type=int,
        metavar="N",
        help="topic + payload bytes a device may publish per second (default: 1 MiB; 0 = off)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log every connection")
    p.add_argument(
        "--rrpc-timeout", type=float, default=8.0, help="RRPC / sync call timeout, s (%(default)s)"
    )
    p.add_argument(
        "--reply-timeout", type=float, default=8.0, help="property set / async call wait, s"
    )
    p.add_argument(
        "--mute", metavar="DN", action="append", default=[], help="fault: drop DN's answers"
    )
    p.set_defaults(handler=serve)

    p = sub.add_parser("product", help="add, list or change products")
    psub = p.add_subparsers(dest="product_command", metavar="ACTION")
    p.set_defaults(handler=lambda a: p.print_help() or 1)
    q = psub.add_parser("add", help="create a product (key and secret generated when omitted)")
    _state(q)
    q.add_argument("--product-key", metavar="PK", help="its ProductKey (default: generated)")
    q.add_argument("--product-secret", metavar="PS", help="its ProductSecret (default: generated)")
    q.add_argument(
        "--no-dynamic-registration",
        action="store_true",
        help="create it with dynamic registration off (devices cannot register themselves)",
    )
    q.set_defaults(handler=product_add)
    q = psub.add_parser("list", help="list products (secrets are not shown)")
    _state(q)
    q.set_defaults(handler=product_list)
    q = psub.add_parser("set", help="switch dynamic registration on or off")
    _state(q)
    q.add_argument("product_key", metavar="PK")
    q.add_argument("--dynamic-registration", choices=("on", "off"), required=True)
    q.set_defaults(handler=product_set)

    p = sub.add_parser("devices", help="list devices, their clientIds and whether online")
    _state(p)
    p.add_argument("--product", metavar="PK")
    p.set_defaults(handler=devices)

    p = sub.add_parser("messages", help="stored device messages")
    _state(p)
    p.add_argument("--device", metavar="DN")
    p.add_argument("--product", metavar="PK")
    p.add_argument("--limit", type=int, default=50, help="newest N (default %(default)s, 0: all)")
    p.set_defaults(handler=messages)

    p = sub.add_parser("events", help="registrations, logins, refusals, disconnects, errors")
    _state(p)
    p.add_argument("--device", metavar="DN")
    p.add_argument("--kind", choices=EVENT_KINDS, help="only events of this kind")
    p.add_argument("--limit", type=int, default=100, help="newest N (default %(default)s, 0: all)")
    p.set_defaults(handler=events)

    _downlink_commands(sub)

    p = sub.add_parser("device", help="operator actions on one device")
    dsub = p.add_subparsers(dest="device_command", metavar="ACTION")
    p.set_defaults(handler=lambda a: p.print_help() or 1)
    for action, help_text in (
        ("keep", "keep one clientId; the others are refused at login"),
        ("clear", "remove every clientId: the device can register again"),
        ("disable", "refuse the device's logins and end its session"),
        ("enable", "allow the device again"),
        ("delete", "delete the device and its clientIds"),
        ("add", "pre-register a device (prints its deviceSecret)"),
    ):
        q = dsub.add_parser(action, help=help_text)
        _state(q)
        q.add_argument("device_name", metavar="DN")
        if action == "add":
            q.add_argument("--product", metavar="PK", required=True, help="the device's product")
        else:
            q.add_argument(
                "--product", metavar="PK", help="needed when the name is in several products"
            )
        if action == "keep":
            q.add_argument("client_id", metavar="CLIENT_ID")
        q.set_defaults(handler=device_action, action=action)

    configure_ota(sub)


def _registry(args, must_exist=True):
    from pathlib import Path

    from host_tools.platform.registry import DB_FILE, Registry

    if must_exist and not (Path(args.state) / DB_FILE).exists():
        raise ZeroburnError(
            f"no platform state in {args.state}: run `zeroburn platform serve` or "
            "`zeroburn platform product add` first, or pass --state"
        )
    return Registry(args.state)


def _when(t):
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _print_json(obj):
    print(json.dumps(obj, default=lambda b: b.decode("utf-8", "replace"), sort_keys=True))


def serve(args):
    from host_tools.platform.server import Platform

    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(message)s",
    )
    ports_file = Path(args.state) / PORTS_FILE
    last = _last_ports(ports_file)
    mqtt_port = args.port if args.port is not None else last["mqtt"]
    mqtts_port = args.tls_port if args.tls_port is not None else last["mqtts"]
    plat = Platform(
        args.state,
        bind=args.bind,
        mqtt_port=mqtt_port,
        mqtts_port=mqtts_port,
        linger_s=args.linger,
        https_port=args.https_port
        if args.https_port is not None
        else (last["https"] if args.tls_port != 0 else 0),
        tls_chain=args.tls_chain,
        tls_max_version="1.3" if args.tls13 else "1.2",
        **{
            k: v
            for k, v in (
                ("uplink_qps", args.uplink_qps),
                ("uplink_bytes_per_s", args.uplink_bytes_per_s),
            )
            if v is not None
        },
        rrpc_timeout_s=args.rrpc_timeout,
        reply_timeout_s=args.reply_timeout,
    )
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        plat.start()
    except OSError as e:
        plat.registry.close()
        why = ""
        if last is not DEFAULT_PORTS and (args.port is None or args.tls_port is None):
            why = (
                f" (ports {last['mqtt']}/{last['mqtts']} are the ones this state folder used "
                "last, "
                f"recorded in {ports_file}; boards are configured with them. Free them, or pass "
                "--port/--tls-port, e.g. 0 for any free port)"
            )
        raise ZeroburnError(
            f"cannot listen on {args.bind} ports {mqtt_port}/{mqtts_port}: {e.strerror or e}{why}"
        )
    except ZeroburnError:
        plat.registry.close()
        raise
    for dn in args.mute:
        plat.mute_replies(dn)
    ports = {"mqtt": plat.mqtt_port, "mqtts": plat.mqtts_port, "https": plat.https_port}
    ports_file.write_text(json.dumps(ports) + "\n")
    ready = json.dumps(
        {
            **ports,
            "ca": plat.ca_path,
            "open_files_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
            "open_files_left": plat.files_left(),
        }
    )
    # The same line in <state>/serve.json, so `config init --platform` finds the ports.
    ready_file = Path(args.state) / "serve.json"
    ready_file.write_text(ready + "\n")
    print(ready, flush=True)
    try:
        while not stop.wait(0.5):
            if not plat.running:
                raise ZeroburnError("the platform stopped unexpectedly")
    finally:
        plat.close()
        ready_file.unlink(missing_ok=True)
        print("zeroburn platform: stopped", file=sys.stderr)
    return 0


def _last_ports(path):
    """The ports recorded in path; DEFAULT_PORTS (the same object) when there are none. A file
    written before the HTTPS port existed keeps its MQTT ports and gets the default HTTPS one."""
    try:
        d = json.loads(path.read_text())
        if all(type(d[k]) is int and 0 < d[k] < 65536 for k in ("mqtt", "mqtts")):
            h = d.get("https")
            ok = type(h) is int and 0 < h < 65536
            return {"mqtt": d["mqtt"], "mqtts": d["mqtts"], "https": h if ok else 8443}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    return DEFAULT_PORTS


def product_add(args):
    reg = _registry(args, must_exist=False)
    try:
        pk, ps = reg.add_product(
            args.product_key, args.product_secret, not args.no_dynamic_registration
        )
    except ValueError as e:
        raise ZeroburnError(str(e))
    finally:
        reg.close()
    if args.json:
        _print_json({"productKey": pk, "productSecret": ps})
    else:
        print(f"productKey    {pk}\nproductSecret {ps}")


def product_list(args):
    reg = _registry(args)
    rows = reg.products()
    reg.close()
    if args.json:
        return _print_json(rows)
    if rows:
        print(f"{'PRODUCT':<20}  {'DYNAMIC REGISTRATION':<20}  CREATED (UTC)")
    for r in rows:
        dyn = "on" if r["dynamic_registration"] else "off"
        print(f"{r['product_key']:<20}  {dyn:<20}  {_when(r['created'])}")


def product_set(args):
    reg = _registry(args)
    try:
        reg.set_dynamic_registration(args.product_key, args.dynamic_registration == "on")
    except KeyError as e:
        raise ZeroburnError(e.args[0])
    finally:
        reg.close()
    if args.json:
        _print_json(
            {"productKey": args.product_key, "dynamic_registration": args.dynamic_registration}
        )
    else:
        print(f"{args.product_key}: dynamic registration {args.dynamic_registration}")


def devices(args):
    from host_tools.platform import downlink

    reg = _registry(args)
    rows = reg.devices(args.product)
    for d in rows:
        d["properties"] = downlink.properties(reg, d["product_key"], d["device_name"])
    reg.close()
    if args.json:
        return _print_json(rows)
    if not rows:
        print("no devices", file=sys.stderr)
        return 0
    print(
        f"{'PRODUCT':<12}  {'DEVICE':<24}  {'STATUS':<8}  {'ONLINE':<7}  REGISTRATIONS"
        "\n    CLIENT ID  STATE  CREATED (UTC)"
    )
    for d in rows:
        state = "online" if d["online"] else "offline"
        print(
            f"{d['product_key']:<12}  {d['device_name']:<24}  {d['status']:<8}  {state:<7}  "
            f"{d['registrations']}"
        )
        for c in d["client_ids"]:
            print(f"    {c['client_id']}  {c['state']}  {_when(c['created'])}")
        for k, v in sorted(d["properties"].items()):
            print(f"    {k} = {json.dumps(v['value'])}  (reported {_when(v['time'])})")


def messages(args):
    reg = _registry(args)
    rows = reg.messages(
        device_name=args.device, product_key=args.product, limit=args.limit or None
    )
    reg.close()
    if args.json:
        for r in rows:
            r["payload"] = r["payload"].decode("utf-8", "replace")
        return _print_json(rows)
    if rows:
        print(f"{'TIME (UTC)':<23}  {'DEVICE':<24}  QOS  TOPIC  PAYLOAD")
    for r in rows:
        body = r["payload"].decode("utf-8", "replace")
        print(f"{_when(r['time'])}  {r['device_name']:<24}  q{r['qos']}   {r['topic']}  {body}")


def events(args):
    reg = _registry(args)
    rows = reg.events(device_name=args.device, kind=args.kind, limit=args.limit or None)
    reg.close()
    if args.json:
        return _print_json(rows)
    if not rows:
        print("no events" + (f" of kind {args.kind}" if args.kind else ""), file=sys.stderr)
        return 0
    print(f"{'TIME (UTC)':<23}  {'KIND':<14} {'DEVICE':<24}  CAUSE / DETAIL")
    for r in rows:
        extra = " ".join(str(x) for x in (r["cause"], r["detail"]) if x)
        print(f"{_when(r['time'])}  {r['kind']:<14} {r['device_name'] or '-':<24}  {extra}")


def device_action(args):
    reg = _registry(args)
    try:
        pk, dn = (
            reg.find_device(args.device_name, args.product)
            if args.action != "add"
            else (
                args.product,
                args.device_name,
            )
        )
        if args.action == "add":
            if not pk:
                raise ZeroburnError("device add needs --product PK")
            secret = reg.add_device(pk, dn)
            if args.json:
                return _print_json({"productKey": pk, "deviceName": dn, "deviceSecret": secret})
            print(f"deviceSecret {secret}")
            return 0
        if args.action == "keep":
            reg.keep_client_id(pk, dn, args.client_id)
        elif args.action == "clear":
            reg.clear_device(pk, dn)
        else:
            getattr(reg, f"{args.action}_device")(pk, dn)
    except (KeyError, ValueError) as e:
        raise ZeroburnError(e.args[0])
    finally:
        reg.close()
    if args.json:
        _print_json({"productKey": pk, "deviceName": dn, "action": args.action})
    else:
        print(f"{args.action}: {dn} ({pk}) at {time.strftime('%H:%M:%S')}")


# ---- OTA (platform/ota.py): packages, upgrade jobs, their status


def configure_ota(sub):
    p = sub.add_parser("ota", help="OTA update packages, upgrade jobs and their progress")
    osub = p.add_subparsers(dest="ota_command", metavar="ACTION")
    p.set_defaults(handler=lambda a: p.print_help() or 1)
    q = osub.add_parser("add", help="upload a package (zeroburn ota build makes one)")
    _state(q)
    q.add_argument("package", metavar="FILE")
    q.add_argument("--product", metavar="PK", required=True)
    q.add_argument("--version", dest="pkg_version", required=True)
    q.add_argument("--module", default="default")
    q.add_argument("--sign-method", default="SHA256", choices=("SHA256", "MD5"))
    q.add_argument("--ext", metavar="K=V", action="append", default=[], help="extData entry")
    q.set_defaults(handler=ota_add)
    q = osub.add_parser("list", help="packages and jobs")
    _state(q)
    q.add_argument("--product", metavar="PK")
    q.set_defaults(handler=ota_list)
    q = osub.add_parser("push", help="an upgrade job: one device, a list, or a whole product")
    _state(q)
    q.add_argument("package_id", metavar="PACKAGE_ID", type=int)
    q.add_argument("--device", metavar="DN", action="append", help="repeat; none: every device")
    q.add_argument("--rate", type=int, metavar="N", help="at most N pushes a minute")
    q.add_argument("--fault", help="corrupt, wrong_sign, truncate, stall, expired, oversize")
    q.add_argument("--fault-times", type=int, metavar="N", help="only the first N downloads")
    q.set_defaults(handler=ota_push)
    q = osub.add_parser("status", help="each device's state, last progress and version")
    _state(q)
    q.add_argument("--job", type=int)
    q.add_argument("--product", metavar="PK")
    q.set_defaults(handler=ota_status)


def _ota_store(args):
    from host_tools.platform.ota import OtaStore
    from host_tools.platform.registry import DB_FILE

    if not (Path(args.state) / DB_FILE).exists():
        raise ZeroburnError(f"no platform state in {args.state}: add a product first")
    return OtaStore(args.state)


def ota_add(args):
    st = _ota_store(args)
    ext = dict(kv.split("=", 1) for kv in args.ext if "=" in kv)
    try:
        row = st.add_package(
            args.package, args.product, args.pkg_version, args.module, args.sign_method, ext
        )
    except (KeyError, ValueError, OSError) as e:
        raise ZeroburnError(str(e.args[0] if e.args else e))
    finally:
        st.close()
    if args.json:
        return _print_json(row)
    print(f"package {row['id']}: {row['product_key']} {row['module']} {row['version']}")
    print(f"  {row['size']} bytes, {row['sign_method']} {row['sign']}")


def ota_list(args):
    st = _ota_store(args)
    pkgs, jobs = st.packages(args.product), st.jobs(args.product)
    st.close()
    if args.json:
        return _print_json({"packages": pkgs, "jobs": jobs})
    for r in pkgs:
        print(
            f"package {r['id']}  {r['product_key']}  {r['module']} {r['version']}  {r['size']} B"
        )
    for j in jobs:
        rate = f"{j['rate_per_min']}/min" if j["rate_per_min"] else "all at once"
        print(f"job {j['id']}  package {j['package_id']}  {rate}  fault {j['fault'] or '-'}")


def ota_push(args):
    st = _ota_store(args)
    try:
        job = st.push(args.package_id, args.device, args.rate, args.fault, args.fault_times)
        n = len(st.status(job_id=job))
    except (KeyError, ValueError) as e:
        raise ZeroburnError(str(e.args[0]))
    finally:
        st.close()
    if args.json:
        return _print_json({"job": job, "devices": n})
    print(f"job {job}: {n} device(s); `zeroburn platform ota status --job {job}` shows progress")


def ota_status(args):
    st = _ota_store(args)
    rows = st.status(args.job, args.product)
    st.close()
    if args.json:
        return _print_json(rows)
    for r in rows:
        step = "-" if r["step"] is None else r["step"]
        print(
            f"job {r['job_id']}  {r['device_name']}  {r['state']:<10} step {step:<4} "
            f"runs {r['version'] or '?'} (target {r['target']})  {r['descr'] or ''}"
        )


# ---- commands to devices (Aliyun's SetDeviceProperty, InvokeThingService, RRpc)


def _downlink_commands(sub):
    def common(q, what):
        _state(q)
        q.add_argument("device_name", metavar="DN")
        q.add_argument("--product", metavar="PK", help="needed when the name is in several")
        q.add_argument(
            "--timeout", type=float, help=f"seconds to wait for {what} (default: the server's)"
        )

    p = sub.add_parser("property", help="set a device's properties (thing model)")
    psub = p.add_subparsers(dest="property_command", metavar="ACTION")
    p.set_defaults(handler=lambda a: p.print_help() or 1)
    q = psub.add_parser("set", help="thing.service.property.set; waits for the set_reply")
    common(q, "the set_reply")
    q.add_argument("params", metavar="JSON", help="e.g. '{\"LightSwitch\": 1}'")
    q.set_defaults(handler=downlink_command, kind="property_set")

    p = sub.add_parser("service", help="call a device's service (thing model)")
    ssub = p.add_subparsers(dest="service_command", metavar="ACTION")
    p.set_defaults(handler=lambda a: p.print_help() or 1)
    q = ssub.add_parser("invoke", help="thing.service.<ID>; waits for the answer")
    common(q, "the answer")
    q.add_argument("identifier", metavar="ID")
    q.add_argument("params", metavar="JSON", nargs="?", default="{}")
    q.add_argument("--sync", action="store_true", help="synchronous call, over RRPC")
    q.set_defaults(handler=downlink_command, kind="service")

    q = sub.add_parser("rrpc", help="send an RRPC request and print the device's response")
    common(q, "the response")
    q.add_argument("payload", metavar="PAYLOAD")
    q.add_argument("--topic", help="custom-topic RRPC on /ext/rrpc/<id>/<pk>/<dn>/TOPIC")
    q.set_defaults(handler=downlink_command, kind="rrpc")


def downlink_command(args):
    from host_tools.platform import downlink

    kind = args.kind
    params = None
    if kind in ("property_set", "service"):
        try:
            params = json.loads(args.params)
        except ValueError as e:
            raise ZeroburnError(f"params must be a JSON object: {e}")
        if not isinstance(params, dict):
            raise ZeroburnError("params must be a JSON object, e.g. '{\"LightSwitch\": 1}'")
    if kind == "service" and args.sync:
        kind = "service_sync"
    reg = _registry(args)
    try:
        pk, dn = reg.find_device(args.device_name, args.product)
        cid = downlink.submit(
            reg,
            pk,
            dn,
            kind,
            args.timeout or 0,  # 0: the server's setting (--rrpc-timeout, --reply-timeout)
            identifier=getattr(args, "identifier", None),
            params=params,
            payload=args.payload.encode() if kind == "rrpc" else None,
            topic=getattr(args, "topic", None),
        )
        # the server ends the command at its timeout; this bound only covers a server gone away
        row = downlink.wait(reg, cid, args.timeout or 60.0)
    except (KeyError, ValueError) as e:
        raise ZeroburnError(e.args[0])
    finally:
        reg.close()
    return _print_command(args, row)


def _print_command(args, row):
    reply = row["reply"]
    text = bytes(reply).decode("utf-8", "replace") if reply is not None else None
    out = {
        "id": row["id"],
        "device": row["device_name"],
        "kind": row["kind"],
        "state": row["state"],
        "topic": row["topic"],
        "reply": text,
    }
    if row["reply_time"] is not None:
        out["seconds"] = round(row["reply_time"] - row["time"], 3)
    if row["kind"] != "rrpc" and text is not None:
        try:
            out["reply"] = json.loads(text)
        except ValueError:
            pass
    # Aliyun's RRpc answer: SUCCESS, TIMEOUT, OFFLINE (UNKNOW otherwise)
    out["rrpcCode"] = {"answered": "SUCCESS", "timeout": "TIMEOUT", "offline": "OFFLINE"}.get(
        row["state"], "UNKNOW"
    )
    if args.json:
        _print_json(out)
    elif row["state"] == "answered":
        print(text)
    if row["state"] == "answered":
        return 0
    why = {
        "timeout": "no answer in time",
        "offline": "the device is not online",
        "expired": "no running `zeroburn platform serve` took the command",
    }.get(row["state"], row["state"])
    if args.json:
        return 1
    raise ZeroburnError(f"{row['kind']} to {row['device_name']}: {why} ({out['rrpcCode']})")

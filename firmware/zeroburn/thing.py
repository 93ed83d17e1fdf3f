# Thing-model downlink (Alink JSON) and RRPC: property set, service calls (asynchronous, and
# synchronous over /ext/rrpc), raw RRPC (system and custom topics). Loaded by session only while
# such a message is handled, then dropped from the heap again.
import gc
import json

from micropython import const

from zeroburn import log

# Reply codes as Aliyun's Link Kit C SDK names them (iotx_dm_error_code_t): what the cloud and
# its consoles show for a device's answer.
_OK = const(200)
_REQUEST_ERROR = const(400)  # malformed request, a handler that raised, junk output
_PARAMS_ERROR = const(460)  # unknown or read-only property, unknown service, refused value
_TIMEOUT = const(100000)  # the handler took longer than _HANDLER_MS
_HANDLER_MS = const(5000)  # below the cloud's 8 s RRPC timeout, so a late answer still says so
_MAX_REPLY = const(16384)  # a larger answer is refused (and said so) rather than risk the heap


def run(a, c, topic, msg):
    """Answer one downlink message for App a on umqtt client c. Only an OSError of the link
    itself leaves here (the session then ends and the reply is dropped)."""
    gc.collect()  # the handler and its answer get the largest free blocks there are
    reply_to = None
    inner = topic
    if topic[:10] == b"/ext/rrpc/":
        inner = topic[topic.find(b"/", 10) :]
        reply_to = topic  # Aliyun: the answer to /ext/rrpc/<id>/<topic> goes to the same topic
    k = inner.find(b"/thing/service/")
    if k >= 0:
        ident = inner[k + 15 :]
        if ident[-6:] == b"_reply":
            return
        out = alink(a, c, ident, msg)
        if reply_to is None:
            reply_to = topic + b"_reply"
    elif b"/rrpc/request/" in inner or reply_to is not None:
        out = raw(a, inner, msg)
        if reply_to is None:
            reply_to = topic.replace(b"/rrpc/request/", b"/rrpc/response/")
    else:
        return
    gc.collect()
    c.publish(reply_to, out)
    log("thing", "replied %d bytes on %s" % (len(out), reply_to.decode()))


def _answer(rid, code, data=None, message=None):
    body = {"id": rid, "code": code, "data": {} if data is None else data}
    if message:
        body["message"] = message
    return json.dumps(body, separators=(",", ":")).encode()


def _failed(e):
    return "%s: %s" % (type(e).__name__, e)


def alink(a, c, ident, msg):
    """The Alink JSON reply to a property set or a service call."""
    try:
        req = json.loads(msg)
        rid = str(req["id"])
        params = req.get("params", {})
        if not isinstance(params, dict):
            raise ValueError("params is not an object")
    except (ValueError, KeyError, TypeError) as e:
        return _answer("", _REQUEST_ERROR, None, "malformed request: %s" % e)
    t = a.thing or ({}, {}, None)
    start = a.clock.ticks()
    message = None
    data = None
    try:
        if ident == b"property/set":
            code, message = set_properties(a, c, t[0], params)
        else:
            fn = t[1].get(ident.decode())
            if fn is None:
                code, message = _PARAMS_ERROR, "no service %s" % ident.decode()
            else:
                code = _OK
                data = fn(params)
                if data is None:
                    data = {}
                if not isinstance(data, dict):
                    code, data, message = _REQUEST_ERROR, None, "output is not an object"
    except (ValueError, TypeError) as e:  # the application refused the input
        code, data, message = _PARAMS_ERROR, None, _failed(e)
    except Exception as e:  # noqa: BLE001  (any failure of the application is an answer)
        code, data, message = _REQUEST_ERROR, None, _failed(e)
    if a.clock.since(start) > _HANDLER_MS:
        code, data, message = _TIMEOUT, None, "handler took %d ms" % a.clock.since(start)
    body = {"id": rid, "code": code, "data": {} if data is None else data}
    if message:
        body["message"] = message
    data = None
    try:
        out = json.dumps(body, separators=(",", ":"))
        body = None  # the handler's output is garbage now: its room goes to the encoded copy
        gc.collect()
        out = out.encode()
    except (TypeError, ValueError) as e:  # output JSON cannot carry
        return _answer(rid, _REQUEST_ERROR, None, "output not JSON: %s" % e)
    except MemoryError:
        return _answer(rid, _REQUEST_ERROR, None, "output too large for the heap")
    if len(out) > _MAX_REPLY:
        return _answer(rid, _REQUEST_ERROR, None, "output too large (%d bytes)" % len(out))
    if code != _OK:
        log("thing", "W: %s answered %d: %s" % (ident.decode(), code, message))
    return out


def set_properties(a, c, props, params):
    """Every property must be known and settable, else nothing is set (460). Then the setters
    run in order, and the new values are reported (thing.event.property.post), as the cloud
    shows a device's properties from its posts."""
    for k in params:
        p = props.get(k)
        if p is None or p[1] is None:
            return _PARAMS_ERROR, "unknown or read-only property %s" % k
    for k in params:
        props[k][1](params[k])
    now = {}
    for k in params:
        try:
            now[k] = props[k][0]() if props[k][0] else params[k]
        except Exception:  # noqa: BLE001  (a broken getter: report what was set)
            now[k] = params[k]
    post = a.t_up[: -len(b"user/update")] + b"thing/event/property/post"
    body = {"id": str(a.clock.unix_ms()), "version": "1.0", "params": now}
    body["method"] = "thing.event.property.post"
    c.publish(b"/sys" + post, json.dumps(body, separators=(",", ":")).encode())
    return _OK, None


def raw(a, topic, msg):
    """The answer of the application's rrpc(payload, topic) handler, as bytes."""
    fn = a.thing[2] if a.thing else None
    if fn is None:
        return b'{"code":460,"message":"no rrpc handler"}'
    start = a.clock.ticks()
    try:
        out = fn(msg, topic.decode())
        if isinstance(out, str):
            out = out.encode()
        elif isinstance(out, dict):
            out = json.dumps(out).encode()
        elif out is None:
            out = b""
        out = bytes(out)
    except Exception as e:  # noqa: BLE001
        out = json.dumps({"code": _REQUEST_ERROR, "message": _failed(e)}).encode()
    if a.clock.since(start) > _HANDLER_MS:
        out = b'{"code":100000,"message":"handler too slow"}'
    if len(out) > _MAX_REPLY:
        out = b'{"code":400,"message":"output too large"}'
    return out

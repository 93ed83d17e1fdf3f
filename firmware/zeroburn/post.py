# The application's own events, property reports and messages, queued durably in the outbox (sent
# QoS 1 oldest first, kept through resets). main.py imports it only when it posts: `post.event(app,
# "Overheat", {"temp_c": 81})`, with the app that setup(app) got.
import json

from zeroburn.telemetry import save


def _queue(a, topic, payload):
    b = a.buf
    b.add(b.seq, payload, topic)
    save(a)
    return b.seq


def _alink(a, method, params):
    b = a.buf
    b.seq += 1
    p = {"id": str(b.seq), "version": "1.0", "params": params, "method": method}
    return json.dumps(p, separators=(",", ":")).encode()


def event(a, identifier, params):
    """Queue a thing-model event (thing.event.<identifier>.post, Alink JSON); returns its id."""
    p = _alink(a, "thing.event.%s.post" % identifier, {"value": params, "time": a.clock.unix_ms()})
    return _queue(a, ("thing/event/%s/post" % identifier).encode(), p)


def report(a, params):
    """Queue a property post {identifier: value} (what the console shows); returns its id."""
    ts = a.clock.unix_ms()
    d = {}
    for k in params:
        d[k] = {"value": params[k], "time": ts}
    return _queue(a, b"thing/event/property/post", _alink(a, "thing.event.property.post", d))


def message(a, suffix, payload):
    """Queue a message for the custom topic /<pk>/<dn>/<suffix>; returns its id."""
    a.buf.seq += 1
    if isinstance(payload, str):
        payload = payload.encode()
    t = suffix.encode() if isinstance(suffix, str) else bytes(suffix)
    return _queue(a, t, bytes(payload))

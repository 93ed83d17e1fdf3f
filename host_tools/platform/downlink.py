# Cloud-to-device commands as Aliyun's console and OpenAPI offer them (SetDeviceProperty,
# InvokeThingService async and sync, RRpc): a command table in the state file that the operator's
# CLI writes and the running server polls, delivers, answers and times out; and the last
# properties each device reported. Imports nothing of the platform (the server and the CLI use it).
#
# Why a table and not a control socket: the CLI already reaches a running server only through
# the SQLite file (WAL), so a command needs no port, no extra listener and no credentials; it is
# durable and audited like every other operator action (a command row is its own record); a CLI
# that outlives a server, or starts before one, sees a plain state ("pending" then "expired")
# rather than a refused connection. The cost is the server's poll period (its ticker, at most
# 0.5 s) added to each command's latency, which is small next to Aliyun's own 8 s RRPC budget.
import json
import time

SCHEMA = """
CREATE TABLE IF NOT EXISTS commands (
    id INTEGER PRIMARY KEY, time REAL NOT NULL, product_key TEXT NOT NULL,
    device_name TEXT NOT NULL, kind TEXT NOT NULL, identifier TEXT, topic TEXT NOT NULL,
    request BLOB NOT NULL, timeout_s REAL NOT NULL, state TEXT NOT NULL,
    reply BLOB, reply_time REAL, late_reply BLOB);
CREATE INDEX IF NOT EXISTS commands_state ON commands (state);
CREATE TABLE IF NOT EXISTS properties (
    product_key TEXT NOT NULL, device_name TEXT NOT NULL, identifier TEXT NOT NULL,
    value TEXT NOT NULL, time REAL NOT NULL, PRIMARY KEY (product_key, device_name, identifier));
"""

KINDS = ("property_set", "service", "service_sync", "rrpc")
FINAL = ("answered", "timeout", "offline", "expired")
# the message ids of RRPC start here, so they look like Aliyun's (large decimal numbers)
_RRPC_BASE = 1_600_000_000_000_000_000


def ensure(conn):
    conn.executescript(SCHEMA)


def message_id(cmd_id):
    return str(_RRPC_BASE + int(cmd_id))


def build(pk, dn, kind, cmd_id, identifier=None, params=None, payload=None, topic=None):
    """(topic, request bytes) the platform publishes to the device for a command."""
    if kind == "rrpc":
        data = payload if isinstance(payload, bytes) else str(payload).encode()
        if topic:  # custom-topic RRPC: /ext/rrpc/<messageId>/<the device's own topic>
            own = topic if topic.startswith("/") else f"/{pk}/{dn}/{topic}"
            return f"/ext/rrpc/{message_id(cmd_id)}{own}", data
        return f"/sys/{pk}/{dn}/rrpc/request/{message_id(cmd_id)}", data
    if kind == "property_set":
        method, service_topic = "thing.service.property.set", "property/set"
    else:
        method, service_topic = f"thing.service.{identifier}", identifier
    body = {"id": str(cmd_id), "version": "1.0", "params": params or {}, "method": method}
    data = json.dumps(body, separators=(",", ":")).encode()
    t = f"/sys/{pk}/{dn}/thing/service/{service_topic}"
    if kind == "service_sync":  # a synchronous call travels over RRPC, answered on the same topic
        t = f"/ext/rrpc/{message_id(cmd_id)}{t}"
    return t, data


def submit(reg, pk, dn, kind, timeout_s, identifier=None, params=None, payload=None, topic=None):
    """Queue a command (Registry reg, any process); returns its id. The server picks it up."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}")
    with reg._lock:
        ensure(reg._conn)

    def op(c):
        cur = c.execute(
            "INSERT INTO commands (time, product_key, device_name, kind, identifier, topic, "
            "request, timeout_s, state) VALUES (?, ?, ?, ?, ?, '', x'', ?, 'pending')",
            (time.time(), pk, dn, kind, identifier, float(timeout_s)),
        )
        cid = cur.lastrowid
        t, data = build(pk, dn, kind, cid, identifier, params, payload, topic)
        c.execute("UPDATE commands SET topic = ?, request = ? WHERE id = ?", (t, data, cid))
        return cid

    return reg._write(op, operator=False)


def command(reg, cmd_id):
    with reg._lock:
        ensure(reg._conn)
    rows = reg._read("SELECT * FROM commands WHERE id = ?", (cmd_id,))
    if not rows:
        raise KeyError(f"no command {cmd_id}")
    return {k: rows[0][k] for k in rows[0].keys()}


def expire(reg, cmd_id):
    """The CLI gave up on a command no server picked up."""

    def op(c):
        c.execute(
            "UPDATE commands SET state = 'expired' WHERE id = ? AND state = 'pending'", (cmd_id,)
        )

    reg._write(op, operator=False)


def wait(reg, cmd_id, timeout_s, pickup_s=10.0, step=0.05):
    """Poll a command until it is final. One no server takes within pickup_s becomes 'expired';
    one taken but not finished within timeout_s + pickup_s (the server went away) reads as
    'timeout'. Returns the row as a dict."""
    start = time.monotonic()
    while True:
        row = command(reg, cmd_id)
        if row["state"] in FINAL:
            return row
        waited = time.monotonic() - start
        if row["state"] == "pending" and waited > pickup_s:
            expire(reg, cmd_id)
            row = command(reg, cmd_id)
            if row["state"] in FINAL:
                return row
        elif waited > timeout_s + pickup_s:
            return dict(row, state="timeout")
        time.sleep(step)


def properties(reg, pk, dn):
    """{identifier: {"value", "time"}} the device reported last (thing.event.property.post)."""
    with reg._lock:
        ensure(reg._conn)
    rows = reg._read(
        "SELECT identifier, value, time FROM properties WHERE product_key = ? AND device_name = ?",
        (pk, dn),
    )
    return {r["identifier"]: {"value": json.loads(r["value"]), "time": r["time"]} for r in rows}


# ---- the server side: runs on the platform's loop thread, writes through its Writer


def _store_properties(conn, pk, dn, params, now):
    for k, v in params.items():
        value = v.get("value") if isinstance(v, dict) and "value" in v else v
        conn.execute(
            "INSERT OR REPLACE INTO properties VALUES (?, ?, ?, ?, ?)",
            (pk, dn, str(k), json.dumps(value), now),
        )


def _set_state(conn, cmd_id, state, reply=None, now=None, late=False):
    if late:
        conn.execute("UPDATE commands SET late_reply = ? WHERE id = ?", (reply, cmd_id))
    elif reply is None:
        conn.execute("UPDATE commands SET state = ? WHERE id = ?", (state, cmd_id))
    else:
        conn.execute(
            "UPDATE commands SET state = ?, reply = ?, reply_time = ? WHERE id = ?",
            (state, reply, now, cmd_id),
        )


def json_object(payload):
    """An Alink payload as a JSON object (a dict), or None when it is not one."""
    try:
        body = json.loads(payload)
    except ValueError:  # UnicodeDecodeError included
        return None
    return body if isinstance(body, dict) else None


class Downlink:
    """The server's half: owned by a Platform, called from its ticker and its inbound path."""

    def __init__(self, plat):
        self.plat = plat
        self.inflight = {}  # command id -> (pk, dn, kind, deadline (loop time), match key)
        self.by_key = {}  # (pk, dn, key) -> command id; key: the Alink id or the messageId
        self.recent = {}  # (pk, dn, key) -> command id of commands that timed out (late replies)
        self.silent = set()  # device names whose answers are dropped (fault: never answers)
        # ids taken from the table: a row still reads 'pending' until the writer commits
        self.seen = set()
        ensure(plat.rconn)

    def poll(self):
        """Deliver pending commands, time out the overdue ones (the ticker calls this)."""
        plat = self.plat
        now = plat.now()
        for cid, (pk, dn, kind, deadline, key) in list(self.inflight.items()):
            if now > deadline:
                del self.inflight[cid]
                self.by_key.pop((pk, dn, key), None)
                self.recent[(pk, dn, key)] = cid
                if len(self.recent) > 1000:
                    self.recent.pop(next(iter(self.recent)))
                plat.writer.submit(_set_state, (cid, "timeout"))
                plat.writer.event("downlink_timeout", pk, dn, None, kind, str(cid))
        rows = plat.rconn.execute(
            "SELECT * FROM commands WHERE state = 'pending' ORDER BY id LIMIT 100"
        ).fetchall()
        for r in rows:
            cid = r["id"]
            if cid in self.seen:
                continue
            if len(self.seen) > 10000:  # long committed: rows this old are no longer pending
                self.seen = {c for c in self.seen if c > cid - 5000}
            self.seen.add(cid)
            pk, dn, kind = r["product_key"], r["device_name"], r["kind"]
            s = plat.online.get((pk, dn))
            if s is None or s.closed:
                plat.writer.submit(_set_state, (cid, "offline"))
                plat.writer.event(kind, pk, dn, None, "offline", str(cid))
                continue
            key = message_id(cid) if kind in ("rrpc", "service_sync") else str(cid)
            timeout = r["timeout_s"] or self.default_timeout(kind)
            self.inflight[cid] = (pk, dn, kind, now + timeout, key)
            self.by_key[(pk, dn, key)] = cid
            plat.writer.submit(_set_state, (cid, "sent"))
            plat.writer.event(kind, pk, dn, s.client_id, "sent", f"{r['topic']} {cid}")
            s.deliver(r["topic"], bytes(r["request"]), 0)

    def default_timeout(self, kind):
        s = self.plat.settings
        return s["rrpc_timeout_s"] if kind in ("rrpc", "service_sync") else s["reply_timeout_s"]

    def inbound(self, s, topic, payload):
        """A device's PUBLISH: an answer to a command, a property or event post. True when it
        was one of those (the server's own services then skip it)."""
        pk, dn = s.pk, s.dn
        key = None
        if topic.startswith("/ext/rrpc/"):
            key = topic.split("/", 4)[3]
        elif topic.startswith(f"/sys/{pk}/{dn}/"):
            rest = topic[len(pk) + len(dn) + 7 :]
            if rest.startswith("rrpc/response/"):
                key = rest[len("rrpc/response/") :]
            elif rest.startswith("thing/service/") and rest.endswith("_reply"):
                try:
                    key = str(json.loads(payload)["id"])
                except (ValueError, KeyError, TypeError):
                    return True
            elif rest.startswith("thing/event/") and rest.endswith("/post"):
                self.post(s, topic, rest, payload)
                return True
        if key is None:
            return False
        if dn in self.silent:
            self.plat.writer.event("downlink_reply", pk, dn, s.client_id, "dropped", topic)
            return True
        cid = self.by_key.pop((pk, dn, key), None)
        now = time.time()
        if cid is not None and cid in self.inflight:
            del self.inflight[cid]
            self.plat.writer.submit(_set_state, (cid, "answered", bytes(payload), now))
            self.plat.writer.event(
                "downlink_reply", pk, dn, s.client_id, "answered", f"{cid} {_text(payload)}"
            )
            return True
        late = self.recent.pop((pk, dn, key), None)
        if late is not None:
            self.plat.writer.submit(_set_state, (late, "timeout", bytes(payload), now, True))
            self.plat.writer.event(
                "downlink_reply", pk, dn, s.client_id, "late", f"{late} {_text(payload)}"
            )
            return True
        self.plat.writer.event("downlink_reply", pk, dn, s.client_id, "unknown", topic)
        return True

    def post(self, s, topic, rest, payload):
        """thing.event.<id>.post and property posts: record properties, answer post_reply."""
        body = json_object(payload)
        if body is None:
            return
        ident = rest[len("thing/event/") : -len("/post")]
        if ident == "property" and isinstance(body.get("params"), dict):
            self.plat.writer.submit(_store_properties, (s.pk, s.dn, body["params"], time.time()))
        sys_ = body.get("sys")
        if isinstance(sys_, dict) and str(sys_.get("ack", 1)) == "0":
            return
        reply = {
            "id": str(body.get("id", "")),
            "code": 200,
            "data": {},
            "message": "success",
            "method": f"thing.event.{ident}.post",
            "version": str(body.get("version", "1.0")),
        }
        self.plat.reply(s, topic + "_reply", reply)


def _text(payload, limit=200):
    t = bytes(payload).decode("utf-8", "replace")
    return t if len(t) <= limit else t[:limit] + "..."

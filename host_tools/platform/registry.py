# The platform's state in one SQLite file (WAL): products, devices, clientIds, messages, events.
import secrets
import sqlite3
import string
import threading
import time
from pathlib import Path

from host_tools.platform import auth

DB_FILE = "platform.sqlite3"
ACTIVATION_LIMIT = 5

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS products (
    product_key TEXT PRIMARY KEY, product_secret TEXT NOT NULL,
    dynamic_registration INTEGER NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS devices (
    product_key TEXT NOT NULL, device_name TEXT NOT NULL, status TEXT NOT NULL,
    device_secret TEXT, registrations INTEGER NOT NULL DEFAULT 0, created REAL NOT NULL,
    PRIMARY KEY (product_key, device_name));
CREATE TABLE IF NOT EXISTS client_ids (
    product_key TEXT NOT NULL, device_name TEXT NOT NULL, client_id TEXT NOT NULL,
    token_hash TEXT NOT NULL, state TEXT NOT NULL, created REAL NOT NULL,
    PRIMARY KEY (product_key, device_name, client_id));
CREATE TABLE IF NOT EXISTS sessions (
    product_key TEXT NOT NULL, device_name TEXT NOT NULL, client_id TEXT NOT NULL,
    since REAL NOT NULL, PRIMARY KEY (product_key, device_name));
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY, time REAL NOT NULL, product_key TEXT, device_name TEXT,
    client_id TEXT NOT NULL, topic TEXT NOT NULL, qos INTEGER NOT NULL, payload BLOB NOT NULL);
-- No index by device on messages: with thousands of devices every stored message would land
-- on a different index page, and each commit would rewrite those pages in the WAL (three to
-- five times the cost of the append itself). Reads by device scan; messages are written far
-- more often than an operator reads them.
DROP INDEX IF EXISTS messages_device;
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY, time REAL NOT NULL, kind TEXT NOT NULL, product_key TEXT,
    device_name TEXT, client_id TEXT, cause TEXT, detail TEXT);
CREATE INDEX IF NOT EXISTS events_device ON events (device_name);
INSERT OR IGNORE INTO meta VALUES ('operator_generation', 0);
"""

_ALNUM = string.ascii_letters + string.digits


def _rand(n, alphabet=_ALNUM):
    return "".join(secrets.choice(alphabet) for _ in range(n))


def connect(state_dir, synchronous="NORMAL"):
    """Open (creating if needed) the state database. WAL lets readers run beside the writer."""
    path = Path(state_dir) / DB_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=10.0, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA busy_timeout=10000")
    conn.executescript(SCHEMA)
    conn.row_factory = sqlite3.Row
    return conn


# ---- operations on a connection inside a transaction (shared by Registry and the server writer)


def bump_generation(conn):
    """Operator actions bump this so a running server re-checks its sessions."""
    conn.execute("UPDATE meta SET value = value + 1 WHERE key = 'operator_generation'")


def generation(conn):
    row = conn.execute("SELECT value FROM meta WHERE key = 'operator_generation'").fetchone()
    return row[0]


def product(conn, pk):
    return conn.execute("SELECT * FROM products WHERE product_key = ?", (pk,)).fetchone()


def device(conn, pk, dn):
    return conn.execute(
        "SELECT * FROM devices WHERE product_key = ? AND device_name = ?", (pk, dn)
    ).fetchone()


def client_id_row(conn, pk, dn, client_id):
    return conn.execute(
        "SELECT * FROM client_ids WHERE product_key = ? AND device_name = ? AND client_id = ?",
        (pk, dn, client_id),
    ).fetchone()


def activate(conn, pk, dn, limit=ACTIVATION_LIMIT, now=None):
    """regnwl: one more clientId + token for (pk, dn). Returns (client_id, token).

    Raises AuthError('activation_limit') when `limit` clientIds exist (kept or revoked: a slot
    is freed only by `clear`) and AuthError('device_disabled') for a disabled device.
    """
    now = now or time.time()
    dev = device(conn, pk, dn)
    if dev is not None and dev["status"] != "enabled":
        raise auth.AuthError("device_disabled")
    (count,) = conn.execute(
        "SELECT COUNT(*) FROM client_ids WHERE product_key = ? AND device_name = ?", (pk, dn)
    ).fetchone()
    if count >= limit:
        raise auth.AuthError("activation_limit", f"{count} clientIds already issued")
    if dev is None:
        conn.execute(
            "INSERT INTO devices (product_key, device_name, status, created) "
            "VALUES (?, ?, 'enabled', ?)",
            (pk, dn, now),
        )
    # clientId prefix < 64 characters, no '|': pk (<= 20) + dn (<= 32) + 10.
    client_id = f"{pk}.{dn}.{_rand(8)}"
    token = _rand(32)
    conn.execute(
        "INSERT INTO client_ids VALUES (?, ?, ?, ?, 'active', ?)",
        (pk, dn, client_id, auth.token_hash(token), now),
    )
    conn.execute(
        "UPDATE devices SET registrations = registrations + 1 "
        "WHERE product_key = ? AND device_name = ?",
        (pk, dn),
    )
    return client_id, token


def issue_device_secret(conn, pk, dn):
    """authType=register: the pre-registered device gets (or keeps) its deviceSecret."""
    dev = device(conn, pk, dn)
    if dev is None:
        raise auth.AuthError("unknown_device")
    if dev["status"] != "enabled":
        raise auth.AuthError("device_disabled")
    ds = dev["device_secret"] or _rand(32)
    conn.execute(
        "UPDATE devices SET device_secret = ?, registrations = registrations + 1 "
        "WHERE product_key = ? AND device_name = ?",
        (ds, pk, dn),
    )
    return ds


# Every kind of event the platform records; `platform events --kind` offers these. A kind not
# listed is a bug of the recorder, refused here so that a test shows it.
EVENT_KINDS = (
    "register",
    "login",
    "refuse",
    "disconnect",
    "kick",
    "throttle",
    "protocol_error",
    "forbidden",
    # over-the-air updates (platform/ota.py)
    "ota_inform",
    "ota_get",
    "ota_push",
    "ota_progress",
    "ota_download",
    "ota_done",
    "ota_bad",
    # operator commands to devices (platform/downlink.py) and what came of them
    "property_set",
    "service",
    "service_sync",
    "rrpc",
    "downlink_reply",
    "downlink_timeout",
)


def add_event(conn, kind, pk=None, dn=None, client_id=None, cause=None, detail=None, now=None):
    if kind not in EVENT_KINDS:
        raise ValueError(f"unknown event kind {kind!r}")
    conn.execute(
        "INSERT INTO events (time, kind, product_key, device_name, client_id, cause, detail) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (now or time.time(), kind, pk, dn, client_id, cause, detail),
    )


def _dict(row, drop=()):
    return {k: row[k] for k in row.keys() if k not in drop}


class Store:
    """One connection to the platform's SQLite state, safe to share between threads: the base
    of the operator-side stores (Registry here, ota.OtaStore, whose connect adds its tables)."""

    _connect = staticmethod(connect)

    def __init__(self, state_dir):
        self.state_dir = Path(state_dir)
        self._conn = self._connect(self.state_dir)
        self._lock = threading.RLock()

    def close(self):
        with self._lock:
            self._conn.close()

    def _rows(self, sql, args=()):
        with self._lock:
            return self._conn.execute(sql, args).fetchall()

    def _transaction(self, fn, *args, operator=False):
        """fn(conn, *args) in one immediate transaction; operator: bump the generation the
        running server polls (it then re-checks live sessions)."""
        with self._lock:
            c = self._conn
            c.execute("BEGIN IMMEDIATE")
            try:
                result = fn(c, *args)
                if operator:
                    bump_generation(c)
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise
            return result


class Registry(Store):
    """The operator's and the tests' view of the platform state (the Aliyun console).

    Opens the same SQLite file as a running server; changes take effect there at once
    (the server polls an operator generation counter and re-checks live sessions).
    Safe to share between threads.
    """

    def _read(self, sql, args=()):
        return self._rows(sql, args)

    def _write(self, fn, *args, operator=True):
        return self._transaction(fn, *args, operator=operator)

    # ---- products

    def add_product(self, product_key=None, product_secret=None, dynamic_registration=True):
        """Create a product; returns (productKey, productSecret). Generated when omitted."""
        pk = product_key or _rand(11)
        ps = product_secret or _rand(16)
        if not auth.PRODUCT_KEY.match(pk):
            raise ValueError(f"productKey {pk!r}: use 1 to 20 letters and digits (Aliyun: 11)")
        if not ps or len(ps) > 64 or not ps.isprintable():
            raise ValueError("productSecret: use 1 to 64 printable characters (Aliyun: 16)")

        def op(c):
            if product(c, pk) is not None:
                raise ValueError(f"product {pk} already exists")
            c.execute(
                "INSERT INTO products VALUES (?, ?, ?, ?)",
                (pk, ps, int(bool(dynamic_registration)), time.time()),
            )

        self._write(op)
        return pk, ps

    def products(self):
        """Products without their secrets."""
        return [
            {
                "product_key": r["product_key"],
                "dynamic_registration": bool(r["dynamic_registration"]),
                "created": r["created"],
            }
            for r in self._read("SELECT * FROM products ORDER BY created")
        ]

    def product_secret(self, pk):
        rows = self._read("SELECT product_secret FROM products WHERE product_key = ?", (pk,))
        if not rows:
            raise KeyError(f"no product {pk}")
        return rows[0][0]

    def set_dynamic_registration(self, pk, on):
        def op(c):
            cur = c.execute(
                "UPDATE products SET dynamic_registration = ? WHERE product_key = ?",
                (int(bool(on)), pk),
            )
            if not cur.rowcount:
                raise KeyError(f"no product {pk}")

        self._write(op)

    # ---- devices

    def add_device(self, pk, dn):
        """Pre-register a device (authType=register or device-secret login); returns its
        deviceSecret."""
        if not auth.DEVICE_NAME.match(dn):
            raise ValueError(f"deviceName {dn!r}: use 4 to 32 of A-Z a-z 0-9 - _ . @ :")

        def op(c):
            if product(c, pk) is None:
                raise KeyError(f"no product {pk}")
            if device(c, pk, dn) is not None:
                raise ValueError(f"device {dn} already exists in {pk}")
            ds = _rand(32)
            c.execute(
                "INSERT INTO devices (product_key, device_name, status, device_secret, created)"
                " VALUES (?, ?, 'enabled', ?, ?)",
                (pk, dn, ds, time.time()),
            )
            return ds

        return self._write(op)

    def device_secret(self, pk, dn):
        rows = self._read(
            "SELECT device_secret FROM devices WHERE product_key = ? AND device_name = ?",
            (pk, dn),
        )
        if not rows:
            raise KeyError(f"no device {dn} in {pk}")
        return rows[0][0]

    def devices(self, product_key=None):
        """Devices with status, clientIds, registrations count and whether online."""
        sql = "SELECT * FROM devices"
        args = ()
        if product_key:
            sql += " WHERE product_key = ?"
            args = (product_key,)
        rows = self._read(sql + " ORDER BY created, device_name", args)
        online = {
            (r["product_key"], r["device_name"]): r["client_id"]
            for r in self._read("SELECT * FROM sessions")
        }
        out = []
        for r in rows:
            key = (r["product_key"], r["device_name"])
            d = _dict(r, drop=("device_secret",))
            d["client_ids"] = self.client_ids(*key)
            d["online"] = key in online
            d["online_client_id"] = online.get(key)
            out.append(d)
        return out

    def device(self, pk, dn):
        for d in self.devices(pk):
            if d["device_name"] == dn:
                return d
        raise KeyError(f"no device {dn} in {pk}")

    def client_ids(self, pk, dn):
        """[{client_id, state ('active' or 'revoked'), created}] (tokens are never shown)."""
        return [
            _dict(r, drop=("token_hash", "product_key", "device_name"))
            for r in self._read(
                "SELECT * FROM client_ids WHERE product_key = ? AND device_name = ? "
                "ORDER BY created",
                (pk, dn),
            )
        ]

    def _need_device(self, c, pk, dn):
        if device(c, pk, dn) is None:
            raise KeyError(f"no device {dn} in {pk}")

    def keep_client_id(self, pk, dn, client_id):
        """Keep one clientId: the others are refused at login. The slots stay used."""

        def op(c):
            self._need_device(c, pk, dn)
            if client_id_row(c, pk, dn, client_id) is None:
                raise KeyError(f"device {dn} has no clientId {client_id}")
            c.execute(
                "UPDATE client_ids SET state = CASE WHEN client_id = ? THEN 'active' "
                "ELSE 'revoked' END WHERE product_key = ? AND device_name = ?",
                (client_id, pk, dn),
            )

        self._write(op)

    def clear_device(self, pk, dn):
        """Remove every clientId and token: the device can register again (5 new slots)."""

        def op(c):
            self._need_device(c, pk, dn)
            c.execute("DELETE FROM client_ids WHERE product_key = ? AND device_name = ?", (pk, dn))

        self._write(op)

    def _set_status(self, pk, dn, status):
        def op(c):
            self._need_device(c, pk, dn)
            c.execute(
                "UPDATE devices SET status = ? WHERE product_key = ? AND device_name = ?",
                (status, pk, dn),
            )

        self._write(op)

    def disable_device(self, pk, dn):
        self._set_status(pk, dn, "disabled")

    def enable_device(self, pk, dn):
        self._set_status(pk, dn, "enabled")

    def delete_device(self, pk, dn):
        def op(c):
            self._need_device(c, pk, dn)
            for table in ("client_ids", "devices"):
                c.execute(
                    f"DELETE FROM {table} WHERE product_key = ? AND device_name = ?", (pk, dn)
                )

        self._write(op)

    def find_device(self, dn, product_key=None):
        """(pk, dn) of a device named dn; ValueError when ambiguous across products."""
        sql = "SELECT product_key FROM devices WHERE device_name = ?"
        args = [dn]
        if product_key:
            sql += " AND product_key = ?"
            args.append(product_key)
        rows = self._read(sql, args)
        if not rows:
            raise KeyError(f"no device {dn}")
        if len(rows) > 1:
            raise ValueError(f"device {dn} exists in several products: name the product")
        return rows[0][0], dn

    # ---- records

    def messages(self, device_name=None, product_key=None, limit=None, topic=None):
        """Stored device messages, oldest first (the newest `limit` when given)."""
        where, args = [], []
        for col, val in (("device_name", device_name), ("product_key", product_key)):
            if val:
                where.append(f"{col} = ?")
                args.append(val)
        if topic:
            where.append("topic = ?")
            args.append(topic)
        sql = "SELECT * FROM messages"
        if where:
            sql += " WHERE " + " AND ".join(where)
        if limit:
            sql = f"SELECT * FROM ({sql} ORDER BY id DESC LIMIT {int(limit)})"
        rows = self._read(sql + " ORDER BY id", args)
        return [dict(_dict(r), payload=bytes(r["payload"])) for r in rows]

    def events(self, device_name=None, kind=None, product_key=None, limit=None):
        """Events (register, login, refuse, disconnect, kick, protocol_error, ...), oldest
        first."""
        where, args = [], []
        for col, val in (
            ("device_name", device_name),
            ("kind", kind),
            ("product_key", product_key),
        ):
            if val:
                where.append(f"{col} = ?")
                args.append(val)
        sql = "SELECT * FROM events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        if limit:
            sql = f"SELECT * FROM ({sql} ORDER BY id DESC LIMIT {int(limit)})"
        return [_dict(r) for r in self._read(sql + " ORDER BY id", args)]

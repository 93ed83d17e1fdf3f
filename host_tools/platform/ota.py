# Aliyun's OTA service in the emulator (PROTOCOL.md section 9, docs/ota.md): update packages,
# upgrade jobs (one device, a list, or a whole product at a rate, as the console's batch
# upgrade), the device side of the protocol (inform, progress, firmware/get, pushes) and the
# HTTPS download host with signed, expiring URLs and download faults. Its state is SQLite
# tables beside the registry's; every inform, progress report and download is an event.
# Imports only from the platform package (pki for the download host's name).
import hashlib
import hmac
import http.server
import json
import secrets
import socket
import sqlite3
import ssl
import threading
import time
import urllib.parse
from pathlib import Path

from host_tools.platform import pki, registry

SCHEMA = """
CREATE TABLE IF NOT EXISTS ota_packages (
    id INTEGER PRIMARY KEY, product_key TEXT NOT NULL, version TEXT NOT NULL,
    module TEXT NOT NULL, size INTEGER NOT NULL, sign_method TEXT NOT NULL, sign TEXT NOT NULL,
    md5 TEXT NOT NULL, file TEXT NOT NULL, ext_data TEXT, created REAL NOT NULL,
    UNIQUE (product_key, module, version));
CREATE TABLE IF NOT EXISTS ota_jobs (
    id INTEGER PRIMARY KEY, package_id INTEGER NOT NULL, product_key TEXT NOT NULL,
    rate_per_min INTEGER, fault TEXT, fault_times INTEGER, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS ota_tasks (
    job_id INTEGER NOT NULL, product_key TEXT NOT NULL, device_name TEXT NOT NULL,
    state TEXT NOT NULL, step INTEGER, descr TEXT, fails INTEGER NOT NULL DEFAULT 0,
    pushed REAL, updated REAL NOT NULL, PRIMARY KEY (job_id, device_name));
CREATE INDEX IF NOT EXISTS ota_tasks_state ON ota_tasks (state);
CREATE TABLE IF NOT EXISTS ota_versions (
    product_key TEXT NOT NULL, device_name TEXT NOT NULL, module TEXT NOT NULL,
    version TEXT NOT NULL, time REAL NOT NULL, PRIMARY KEY (product_key, device_name, module));
"""

# task states: queued (not pushed yet: offline, or held back by the job's rate), pushed,
# upgrading (progress 1..99 seen), succeeded (inform with the new version), failed (a negative
# step), cancelled (a newer job for the device took over)
OPEN = ("queued", "pushed", "upgrading")
FAULTS = ("corrupt", "wrong_sign", "truncate", "stall", "expired", "oversize")
SETTINGS = {
    "url_ttl_s": 3600.0,  # how long a download URL is valid (Aliyun: hours; [UNK] exact)
    "download_retries": 3,  # firmware/get answers a job again after a -2 this many times
    "stall_s": 60.0,  # a stalled download holds the connection this long at most
    "push_on_inform": True,  # push pending upgrades when a device informs (else only get)
}


def connect(state_dir):
    conn = registry.connect(state_dir)
    conn.executescript(SCHEMA)
    return conn


def _dict(row):
    return {k: row[k] for k in row.keys()}


class OtaStore(registry.Store):
    """The operator's side (the console's OTA pages, the CLI, tests): packages, jobs, status.
    Opens the same SQLite file as a running platform, which picks up new jobs by itself."""

    _connect = staticmethod(connect)  # the OTA tables too

    def __init__(self, state_dir):
        super().__init__(state_dir)
        self.files = self.state_dir / "ota"

    def _read(self, sql, args=()):
        return [_dict(r) for r in self._rows(sql, args)]

    def _write(self, fn):
        return self._transaction(fn)

    def add_package(
        self, package, product_key, version, module="default", sign_method="SHA256", ext_data=None
    ):
        """Upload a package file (path or bytes) for a product; returns its row. ext_data: the
        console's custom key/values pushed with it (zeroburn reads zb_trial_boots, zb_trial_s)."""
        data = package if isinstance(package, bytes) else Path(package).read_bytes()
        method = sign_method.upper()
        if method not in ("SHA256", "MD5"):
            raise ValueError("sign method must be SHA256 or MD5")
        sign = hashlib.new(method.lower(), data).hexdigest()
        self.files.mkdir(parents=True, exist_ok=True)
        name = f"{product_key}-{module}-{version}-{sign[:12]}.bin"
        tmp = self.files / (name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(self.files / name)

        def op(c):
            if registry.product(c, product_key) is None:
                raise KeyError(f"no product {product_key}")
            if c.execute(
                "SELECT 1 FROM ota_packages WHERE product_key=? AND module=? AND version=?",
                (product_key, module, version),
            ).fetchone():
                raise ValueError(f"{product_key} already has a package {module} {version}")
            cur = c.execute(
                "INSERT INTO ota_packages (product_key, version, module, size, sign_method,"
                " sign, md5, file, ext_data, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    product_key,
                    version,
                    module,
                    len(data),
                    method,
                    sign,
                    hashlib.md5(data).hexdigest(),
                    name,
                    json.dumps(ext_data or {}),
                    time.time(),
                ),
            )
            return cur.lastrowid

        pid = self._write(op)
        return self.package(pid)

    def package(self, package_id):
        rows = self._read("SELECT * FROM ota_packages WHERE id = ?", (package_id,))
        if not rows:
            raise KeyError(f"no package {package_id}")
        return rows[0]

    def packages(self, product_key=None):
        if product_key:
            return self._read(
                "SELECT * FROM ota_packages WHERE product_key = ? ORDER BY id", (product_key,)
            )
        return self._read("SELECT * FROM ota_packages ORDER BY id")

    def push(self, package_id, devices=None, rate_per_min=None, fault=None, fault_times=None):
        """An upgrade job: the package to `devices` (names), or to every device of the product
        when None. rate_per_min caps pushes a minute (None: all at once). fault (FAULTS) hits
        every download of the job, or its first fault_times. Returns the job id."""
        if fault is not None and fault not in FAULTS:
            raise ValueError(f"fault {fault!r}: one of {', '.join(FAULTS)}")
        if rate_per_min is not None and rate_per_min < 1:
            raise ValueError("rate must be at least 1 device a minute")
        pkg = self.package(package_id)
        pk = pkg["product_key"]

        def op(c):
            if devices is None:
                names = [
                    r[0]
                    for r in c.execute(
                        "SELECT device_name FROM devices WHERE product_key = ?", (pk,)
                    )
                ]
            else:
                names = list(dict.fromkeys(devices))
                for dn in names:
                    if registry.device(c, pk, dn) is None:
                        raise KeyError(f"no device {dn} in {pk}")
            if not names:
                raise ValueError(f"no device to upgrade in {pk}")
            now = time.time()
            job = c.execute(
                "INSERT INTO ota_jobs (package_id, product_key, rate_per_min, fault, fault_times,"
                " created) VALUES (?, ?, ?, ?, ?, ?)",
                (package_id, pk, rate_per_min, fault, fault_times, now),
            ).lastrowid
            for dn in names:
                # one ongoing upgrade a device (as Aliyun): the newer job takes over
                c.execute(
                    "UPDATE ota_tasks SET state = 'cancelled', updated = ? WHERE product_key = ?"
                    " AND device_name = ? AND state IN ('queued', 'pushed', 'upgrading')",
                    (now, pk, dn),
                )
                c.execute(
                    "INSERT INTO ota_tasks (job_id, product_key, device_name, state, updated)"
                    " VALUES (?, ?, ?, 'queued', ?)",
                    (job, pk, dn, now),
                )
            return job

        return self._write(op)

    def jobs(self, product_key=None):
        sql = "SELECT * FROM ota_jobs" + (" WHERE product_key = ?" if product_key else "")
        return self._read(sql + " ORDER BY id", (product_key,) if product_key else ())

    def status(self, job_id=None, product_key=None):
        """Each task: device, state, last step and desc it reported, the version it runs."""
        where, args = [], []
        if job_id is not None:
            where.append("t.job_id = ?")
            args.append(job_id)
        if product_key:
            where.append("t.product_key = ?")
            args.append(product_key)
        sql = (
            "SELECT t.*, p.version AS target, v.version AS version FROM ota_tasks t"
            " JOIN ota_jobs j ON j.id = t.job_id JOIN ota_packages p ON p.id = j.package_id"
            " LEFT JOIN ota_versions v ON v.product_key = t.product_key"
            " AND v.device_name = t.device_name AND v.module = p.module"
        )
        if where:
            sql += " WHERE " + " AND ".join(where)
        return self._read(sql + " ORDER BY t.job_id, t.device_name", args)

    def versions(self, product_key=None):
        sql = "SELECT * FROM ota_versions" + (" WHERE product_key = ?" if product_key else "")
        return self._read(sql + " ORDER BY device_name", (product_key,) if product_key else ())


class OtaService:
    """The platform's side, on its event loop: answers the devices' OTA topics, pushes jobs,
    serves the packages over HTTPS (its own thread)."""

    # set by start(), None before it and after stop()
    conn: sqlite3.Connection | None
    httpd: "_Server | None"
    key: bytes | None

    def __init__(self, plat, **settings):
        self.plat = plat
        self.settings = dict(SETTINGS, **settings)
        self.conn = None
        self.httpd = None
        self.port = None
        self.key = None
        self.downloads = {}  # job id -> downloads served (for fault_times)
        self.pushes = {}  # job id -> [push times] (for the rate)
        self.lock = threading.Lock()

    # ---- life cycle (called by the platform)

    def start(self):
        state = Path(self.plat.state_dir)
        self.conn = connect(state)
        key_file = state / "ota" / "url.key"
        key_file.parent.mkdir(parents=True, exist_ok=True)
        if not key_file.exists():
            key_file.write_text(secrets.token_hex(32))
        self.key = key_file.read_text().strip().encode()
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        _ca, cert, key = pki.ensure(state)
        ctx.load_cert_chain(cert, key)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        service = self

        class Handler(_Download):
            ota = service

        self.httpd = _Server((self.plat.bind, 0), Handler)
        self.httpd.ctx = ctx
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, name="platform-ota", daemon=True).start()

    @property
    def db(self):
        """The service's connection; only between start() and stop()."""
        assert self.conn is not None, "the OTA service is not started"
        return self.conn

    @property
    def secret(self):
        """The URL signing key; only between start() and stop()."""
        assert self.key is not None, "the OTA service is not started"
        return self.key

    def stop(self):
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    # ---- URLs

    def url(self, pkg, expired=False):
        """A signed URL of the package on the download host (OSS style: Expires, Signature)."""
        path = f"/ota/{pkg['product_key']}/{pkg['id']}/{pkg['file']}"
        expires = int(time.time() + (-60 if expired else self.settings["url_ttl_s"]))
        sig = hmac.new(self.secret, f"{path}\n{expires}".encode(), hashlib.sha256).hexdigest()
        return f"https://{pki.OTA_HOST}:{self.port}{path}?Expires={expires}&Signature={sig}"

    def check_url(self, target):
        """(package row, job id or None) a request may download, or an HTTP status."""
        u = urllib.parse.urlsplit(target)
        q = urllib.parse.parse_qs(u.query)
        try:
            expires = int(q["Expires"][0])
            sig = q["Signature"][0]
        except (KeyError, ValueError, IndexError):
            return 403
        want = hmac.new(self.secret, f"{u.path}\n{expires}".encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(want, sig) or expires < time.time():
            return 403
        parts = u.path.split("/")
        if len(parts) != 5 or parts[1] != "ota" or not parts[3].isdigit():
            return 404
        with self.lock:
            conn = registry.connect(self.plat.state_dir)
            try:
                rows = conn.execute(
                    "SELECT * FROM ota_packages WHERE id = ?", (int(parts[3]),)
                ).fetchall()
            finally:
                conn.close()
        if not rows or rows[0]["file"] != parts[4]:
            return 404
        job = q.get("job", [None])[0]
        dn = q.get("dn", [None])[0]
        return _dict(rows[0]), int(job) if job and job.isdigit() else None, dn

    # ---- the device side (the platform's loop thread)

    def topics(self, pk, dn):
        return (
            f"/ota/device/inform/{pk}/{dn}",
            f"/ota/device/progress/{pk}/{dn}",
            f"/sys/{pk}/{dn}/thing/ota/firmware/get",
        )

    def on_message(self, s, topic, payload):
        pk, dn = s.pk, s.dn
        inform, progress, get = self.topics(pk, dn)
        if topic not in (inform, progress, get):
            return
        try:
            body = json.loads(payload)
            params = body.get("params") or {}
            if not isinstance(params, dict):
                raise ValueError
        except (ValueError, AttributeError):
            self.plat.writer.event("ota_bad", pk, dn, s.client_id, topic, "not JSON")
            return
        module = str(params.get("module") or "default")
        if topic == inform:
            self.on_inform(s, str(params.get("version", "")), module)
        elif topic == progress:
            self.on_progress(s, params, module)
        else:
            self.on_get(s, body, module)

    def _task(self, pk, dn, module, states=OPEN):
        marks = ",".join("?" * len(states))
        rows = self.db.execute(
            "SELECT t.*, j.fault, j.fault_times, j.rate_per_min, p.id AS package_id, p.version,"
            " p.module, p.size, p.sign_method, p.sign, p.md5, p.file, p.ext_data,"
            " p.product_key AS pkg_pk"
            " FROM ota_tasks t JOIN ota_jobs j ON j.id = t.job_id"
            " JOIN ota_packages p ON p.id = j.package_id"
            f" WHERE t.product_key = ? AND t.device_name = ? AND p.module = ? AND t.state IN"
            f" ({marks}) ORDER BY t.job_id DESC LIMIT 1",
            (pk, dn, module, *states),
        ).fetchall()
        return _dict(rows[0]) if rows else None

    def _set(self, task, state, step=None, descr=None, fails=0):
        self.db.execute(
            "UPDATE ota_tasks SET state = ?, step = COALESCE(?, step), descr = COALESCE(?, descr),"
            " fails = fails + ?, updated = ? WHERE job_id = ? AND device_name = ?",
            (state, step, descr, fails, time.time(), task["job_id"], task["device_name"]),
        )

    def on_inform(self, s, version, module):
        pk, dn = s.pk, s.dn
        self.db.execute(
            "INSERT OR REPLACE INTO ota_versions VALUES (?, ?, ?, ?, ?)",
            (pk, dn, module, version, time.time()),
        )
        self.plat.writer.event("ota_inform", pk, dn, s.client_id, version, module)
        task = self._task(pk, dn, module)
        if task is None:
            return
        if task["version"] == version:
            self._set(task, "succeeded", 100)
            self.plat.writer.event(
                "ota_done", pk, dn, s.client_id, version, f"job {task['job_id']}"
            )
        elif self.settings["push_on_inform"] and (
            task["state"] != "queued" or self._rate_ok(task)
        ):
            # an offline device gets the push again when it comes online
            self._push(s, task)

    def on_progress(self, s, params, module):
        pk, dn = s.pk, s.dn
        try:
            step = int(params.get("step"))
        except (TypeError, ValueError):
            self.plat.writer.event("ota_bad", pk, dn, s.client_id, "progress", "step")
            return
        descr = str(params.get("desc", ""))[:200]
        self.plat.writer.event("ota_progress", pk, dn, s.client_id, str(step), descr)
        task = self._task(pk, dn, module, ("queued", "pushed", "upgrading", "failed"))
        if task is None:
            return
        if step < 0:
            self._set(task, "failed", step, descr, fails=1)
        elif task["state"] != "failed" or step >= 1:
            self._set(task, "upgrading" if step < 100 else task["state"], step, descr)

    def on_get(self, s, body, module):
        pk, dn = s.pk, s.dn
        task = self._task(pk, dn, module)
        if task is None:
            failed = self._task(pk, dn, module, ("failed",))
            if (
                failed is not None
                and failed["step"] == -2
                and failed["fails"] < self.settings["download_retries"]
            ):
                task = failed
        data = {}
        if task is not None:
            data = self._data(task, fresh=True)
            if task["state"] in ("queued", "failed"):
                self._set(task, "pushed")
                self.db.execute(
                    "UPDATE ota_tasks SET pushed = ? WHERE job_id = ? AND device_name = ?",
                    (time.time(), task["job_id"], dn),
                )
        self.plat.writer.event("ota_get", pk, dn, s.client_id, data.get("version"), module)
        reply = {
            "id": str(body.get("id", "")),
            "code": 200,
            "data": data,
            "message": "success",
            "method": "thing.ota.firmware.get",
            "version": "1.0",
        }
        self.plat.reply(s, f"/sys/{pk}/{dn}/thing/ota/firmware/get_reply", reply)

    def _data(self, task, fresh=False):
        """The push's data: size, version, url, sign, signMethod, md5, module (and the faults
        that change what the device is told)."""
        fault = task["fault"]
        pkg = {
            "id": task["package_id"],
            "product_key": task["pkg_pk"],
            "file": task["file"],
        }
        url = self.url(pkg, expired=fault == "expired" and not fresh)
        url += f"&job={task['job_id']}&dn={task['device_name']}"
        sign = task["sign"]
        if fault == "wrong_sign":
            sign = hashlib.new(task["sign_method"].lower(), b"not the package").hexdigest()
        size = task["size"] * (1 << 20) if fault == "oversize" else task["size"]
        return {
            "size": size,
            "version": task["version"],
            "isDiff": 0,
            "url": url,
            "md5": task["md5"],
            "sign": sign,
            "signMethod": task["sign_method"],
            "module": task["module"],
            "extData": json.loads(task["ext_data"] or "{}"),
        }

    def _rate_ok(self, task):
        rate = task["rate_per_min"]
        if not rate:
            return True
        now = time.time()
        recent = [t for t in self.pushes.get(task["job_id"], []) if now - t < 60]
        self.pushes[task["job_id"]] = recent
        return len(recent) < rate

    def _push(self, s, task):
        data = self._data(task)
        msg = {
            "code": "1000",
            "data": data,
            "id": str(int(time.time() * 1000)),
            "message": "success",
        }
        topic = f"/ota/device/upgrade/{s.pk}/{s.dn}"
        payload = json.dumps(msg, separators=(",", ":")).encode()
        if not self.plat.route(topic, payload, 1):
            return False  # not subscribed (yet): stays as it is, pushed at its next inform
        self.pushes.setdefault(task["job_id"], []).append(time.time())
        if task["state"] == "queued":
            self._set(task, "pushed")
        self.db.execute(
            "UPDATE ota_tasks SET pushed = ? WHERE job_id = ? AND device_name = ?",
            (time.time(), task["job_id"], task["device_name"]),
        )
        self.plat.writer.event(
            "ota_push", s.pk, s.dn, s.client_id, data["version"], f"job {task['job_id']}"
        )
        return True

    def tick(self):
        """Push queued tasks of online devices, within each job's rate."""
        if not self.settings["push_on_inform"]:
            return
        rows = self.db.execute(
            "SELECT product_key, device_name FROM ota_tasks WHERE state = 'queued'"
        ).fetchall()
        for pk, dn in rows:
            s = self.plat.online.get((pk, dn))
            if s is None:
                continue
            for module in ("default",):
                task = self._task(pk, dn, module, ("queued",))
                if task is not None and self._rate_ok(task):
                    self._push(s, task)

    # ---- downloads (the HTTPS thread)

    def fault_for(self, job_id):
        """The job's download fault for this download, or None."""
        if job_id is None:
            return None
        with self.lock:
            conn = registry.connect(self.plat.state_dir)
            try:
                conn.executescript(SCHEMA)
                row = conn.execute(
                    "SELECT fault, fault_times FROM ota_jobs WHERE id = ?", (job_id,)
                ).fetchone()
            finally:
                conn.close()
            n = self.downloads.get(job_id, 0)
            self.downloads[job_id] = n + 1
        if row is None or row["fault"] not in ("corrupt", "truncate", "stall"):
            return None
        if row["fault_times"] is not None and n >= row["fault_times"]:
            return None
        return row["fault"]

    def event(self, *args):
        loop = self.plat.loop
        try:
            loop.call_soon_threadsafe(self.plat.writer.event, *args)
        except RuntimeError:
            pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    ctx: ssl.SSLContext  # set before serve_forever

    def get_request(self):
        sock, addr = super().get_request()
        sock.settimeout(10)
        try:
            return self.ctx.wrap_socket(sock, server_side=True), addr
        except (ssl.SSLError, OSError):
            sock.close()
            raise


class _Download(http.server.BaseHTTPRequestHandler):
    ota: OtaService  # set by the subclass OtaService.start() makes
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        ota = self.ota
        got = ota.check_url(self.path)
        if isinstance(got, int):
            ota.event("ota_download", None, None, None, str(got), self.path.split("?")[0])
            body = (
                b"<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>"
            )
            self.send_response(got)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
            return
        pkg, job, dn = got
        data = (ota.plat.state_dir / "ota" / pkg["file"]).read_bytes()
        fault = ota.fault_for(job)
        ota.event("ota_download", pkg["product_key"], dn, None, "200", fault or pkg["version"])
        send = data
        if fault == "corrupt":
            mid = len(data) // 2
            send = data[:mid] + bytes([data[mid] ^ 0xFF]) + data[mid + 1 :]
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        try:
            if fault in ("truncate", "stall"):
                self.wfile.write(send[: len(send) // 2])
                self.wfile.flush()
                if fault == "stall":
                    end = time.monotonic() + ota.settings["stall_s"]
                    self.connection.settimeout(0.2)
                    while time.monotonic() < end:  # until the device gives up (or the bound)
                        try:
                            if not self.connection.recv(1):
                                break
                        except TimeoutError:
                            continue
                        except (OSError, ssl.SSLError):
                            break
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.wfile.write(send)
        except (OSError, ssl.SSLError):
            pass

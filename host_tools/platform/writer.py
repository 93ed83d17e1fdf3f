# Group commit: one thread batches the platform's writes for a few ms, commits, then answers.
import logging
import sqlite3
import threading
import time

from host_tools.platform import auth, registry

log = logging.getLogger("zeroburn.platform")

_INSERT_MESSAGE = (
    "INSERT INTO messages (time, product_key, device_name, client_id, topic, qos, payload) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)


class Writer:
    """Runs write operations in batches on its own SQLite connection.

    Each item's callback runs on the asyncio loop only after the batch holding it committed,
    so a PUBACK (or CONNACK after a registration) never precedes durability. Callbacks run in
    submission order, which keeps PUBACKs in the order the PUBLISHes arrived.
    """

    def __init__(self, state_dir, loop, window_s=0.002, synchronous="NORMAL"):
        self.conn = registry.connect(state_dir, synchronous)
        self.loop = loop
        self.window_s = window_s
        self._items = []
        self._cond = threading.Condition()
        self._stopping = False
        self.after_batch = None  # called on the loop after each batch's callbacks
        self._thread = threading.Thread(target=self._run, name="platform-writer", daemon=True)
        self._thread.start()

    def message(self, row, cb=None):
        """row = (time, pk, dn, client_id, topic, qos, payload)."""
        with self._cond:
            self._items.append((None, row, cb))
            if len(self._items) == 1:
                self._cond.notify()

    def submit(self, fn, args=(), cb=None):
        """fn(conn, *args) runs in a savepoint; cb(result or exception) runs on the loop."""
        with self._cond:
            self._items.append((fn, args, cb))
            if len(self._items) == 1:
                self._cond.notify()

    def event(self, kind, pk=None, dn=None, client_id=None, cause=None, detail=None):
        self.submit(registry.add_event, (kind, pk, dn, client_id, cause, detail, time.time()))

    def stop(self):
        """Commit everything queued, then stop the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join()
        self.conn.close()

    def _run(self):
        while True:
            with self._cond:
                while not self._items and not self._stopping:
                    self._cond.wait()
                if not self._items and self._stopping:
                    return
            if self.window_s and not self._stopping:
                time.sleep(self.window_s)  # let the batch fill: one commit for many messages
            with self._cond:
                items, self._items = self._items, []
            self._commit(items)

    def _commit(self, items):
        conn = self.conn
        results = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            i, n = 0, len(items)
            while i < n:
                fn = items[i][0]
                if fn is None:
                    j = i
                    while j < n and items[j][0] is None:
                        j += 1
                    conn.executemany(_INSERT_MESSAGE, [it[1] for it in items[i:j]])
                    results.extend(None for _ in range(i, j))
                    i = j
                    continue
                conn.execute("SAVEPOINT op")
                try:
                    res = fn(conn, *items[i][1])
                    conn.execute("RELEASE op")
                except Exception as e:  # the op's own refusal (AuthError) or a bug: undo it only
                    conn.execute("ROLLBACK TO op")
                    conn.execute("RELEASE op")
                    if not isinstance(e, (LookupError, ValueError, auth.AuthError)):
                        log.exception("platform write failed")
                    res = e
                results.append(res)
                i += 1
            conn.execute("COMMIT")
        except sqlite3.Error as e:
            log.error("platform: commit failed (%s); nothing in this batch is acknowledged", e)
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            results = [e] * len(items)
        calls = [(it[2], r) for it, r in zip(items, results, strict=True) if it[2] is not None]
        if calls:
            try:
                self.loop.call_soon_threadsafe(_deliver, calls, self.after_batch)
            except RuntimeError:  # loop already closed: nobody left to answer
                pass


def _deliver(calls, after):
    for cb, res in calls:
        try:
            cb(res)
        except Exception:
            log.exception("platform: callback failed")
    if after is not None:
        after()

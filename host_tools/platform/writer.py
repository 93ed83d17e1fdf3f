# Group commit: one thread batches the platform's writes for a few ms, commits, then answers.
import itertools
import logging
import sqlite3
import threading
import time
from collections.abc import Callable

from host_tools.platform import auth, registry

log = logging.getLogger("zeroburn.platform")

_COLUMNS = "INSERT INTO messages (time, product_key, device_name, client_id, topic, qos, payload)"
_INSERT_MESSAGE = f"{_COLUMNS} VALUES (?, ?, ?, ?, ?, ?, ?)"
# Most rows per INSERT statement (within the SQLite build's parameter limit, 7 per row).
_MAX_CHUNK = 1024
# What an event row counts in its session's backlog (bytes; a row holds a few short strings).
EVENT_BYTES = 256
_FULL = 64  # items waiting that make a batch worth committing without the window
_INSERTS = {}  # rows -> INSERT statement for that many rows


def _insert_sql(n):
    return f"{_COLUMNS} VALUES " + ",".join(["(?,?,?,?,?,?,?)"] * n)


class _Committer:
    """Items queued under a lock, committed in batches by run() (the writer thread's body).

    An item is (fn, args, cb): fn None means args is a message row. answer(calls) gets
    [(cb, result or exception)] for the items whose cb is not None, in order, after COMMIT.
    """

    def __init__(self, state_dir, window_s, synchronous):
        self.conn = registry.connect(state_dir, synchronous)
        per_statement = self.conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // 7
        self.chunk = 1 << (min(_MAX_CHUNK, max(1, per_statement)).bit_length() - 1)
        self.window_s = window_s
        self.items = []
        self.cond = threading.Condition()
        self.stopping = False

    def put(self, items):
        with self.cond:
            was_empty = not self.items
            self.items.extend(items)
            if was_empty:
                self.cond.notify()

    def stop(self):
        with self.cond:
            self.stopping = True
            self.cond.notify()

    def run(self, answer):
        while True:
            with self.cond:
                while not self.items and not self.stopping:
                    self.cond.wait()
                if not self.items and self.stopping:
                    return
                full = len(self.items) >= _FULL
            if self.window_s and not self.stopping and not full:
                # Let a small batch fill: one commit for many messages. A batch that is already
                # big is committed at once, so under load commits follow each other back to
                # back while the loop reads the next batch (a pipeline, not a lock-step).
                time.sleep(self.window_s)
            with self.cond:
                items, self.items = self.items, []
            calls = self.commit(items)
            if calls:
                answer(calls)

    def insert(self, rows):
        """Insert message rows with few statements: chunks of a power of two rows each (so a
        handful of cached statements cover every batch size), each bound and run in one go:
        the GIL is released once per statement, not once per row."""
        conn = self.conn
        n, i = len(rows), 0
        while i < n:
            k = min(self.chunk, 1 << ((n - i).bit_length() - 1))
            if k == 1:
                conn.execute(_INSERT_MESSAGE, rows[i])
            else:
                sql = _INSERTS.get(k) or _INSERTS.setdefault(k, _insert_sql(k))
                conn.execute(sql, list(itertools.chain.from_iterable(rows[i : i + k])))
            i += k

    def commit(self, items):
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
                    self.insert([it[1] for it in items[i:j]])
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
        return [(it[2], r) for it, r in zip(items, results, strict=True) if it[2] is not None]


class Writer:
    """Runs write operations in batches on its own SQLite connection, in a thread.

    Each item's callback runs on the asyncio loop only after the batch holding it committed,
    so a PUBACK (or CONNACK after a registration) never precedes durability. Callbacks run in
    submission order, which keeps PUBACKs in the order the PUBLISHes arrived.

    message(), message_owned(), submit() and event() are called on the loop's thread: they
    stage items without a lock, and the staged items of one event-loop turn go to the writer
    thread together (one lock, one wake-up per turn rather than per message).
    """

    def __init__(self, state_dir, loop, window_s=0.002, synchronous="NORMAL"):
        self.loop = loop
        self._staged = []  # this loop turn's items (loop thread only)
        # called on the loop after each batch's callbacks (Platform sets it)
        self.after_batch: Callable[[], None] | None = None
        self._core = _Committer(state_dir, window_s, synchronous)
        self._thread = threading.Thread(
            target=self._core.run, args=(self._answer,), name="platform-writer", daemon=True
        )
        self._thread.start()

    def message(self, row, cb=None):
        """row = (time, pk, dn, client_id, topic, qos, payload); cb(None or exception)."""
        self._stage((None, row, cb))

    def message_owned(self, row, session, packet_id, nbytes):
        """A message a session sent: after the commit, session.committed(nbytes, packet_id,
        ok) runs (the session's and the server's backlog shrink by nbytes; a QoS 1 message is
        acknowledged). A tuple, not a closure, per message on the hot path."""
        self._stage((None, row, (session, packet_id, nbytes)))

    def submit(self, fn, args=(), cb=None):
        """fn(conn, *args) runs in a savepoint; cb(result or exception) runs on the loop. cb may
        also be a (session, packet_id, nbytes) tuple, answered as in message_owned."""
        self._stage((fn, args, cb))

    def event(self, kind, pk=None, dn=None, client_id=None, cause=None, detail=None, owner=None):
        """owner: the session whose traffic caused the event: owner.charge(EVENT_BYTES) now,
        owner.committed(...) after the commit, so the event counts in its backlog."""
        cb = None
        if owner is not None:
            owner.charge(EVENT_BYTES)
            cb = (owner, None, EVENT_BYTES)
        self.submit(registry.add_event, (kind, pk, dn, client_id, cause, detail, time.time()), cb)

    def _stage(self, item):
        staged = self._staged
        staged.append(item)
        if len(staged) == 1:
            try:
                self.loop.call_soon(self.handoff)
            except RuntimeError:  # loop closed (stopping): hand over at once
                self.handoff()

    def handoff(self):
        """Give the staged items to the writer thread (runs once per loop turn)."""
        staged, self._staged = self._staged, []
        if staged:
            self._core.put(staged)

    def _answer(self, calls):
        try:
            self.loop.call_soon_threadsafe(_deliver, calls, self.after_batch)
        except RuntimeError:  # loop already closed: nobody left to answer
            pass

    def stop(self):
        """Commit everything handed over, then stop the thread. The loop hands over its last
        staged items (Platform._shutdown does) before another thread calls this."""
        if not self.loop.is_running():
            self.handoff()
        self._core.stop()
        self._thread.join()
        self._core.conn.close()


def _deliver(calls, after):
    for cb, res in calls:
        try:
            if type(cb) is tuple:  # (session, packet_id, nbytes): on failure no PUBACK
                cb[0].committed(cb[2], cb[1], res is None)
            else:
                cb(res)
        except Exception:
            log.exception("platform: callback failed")
    if after is not None:
        after()

# A local platform's state as the tools that point boards at it read it from outside (the
# server may be running): a product's secret from the SQLite state, the TLS port from the ready
# file, the CA certificate's path. The platform owns these formats, so their readers live here.
import json
import sqlite3
from pathlib import Path

# The platform emulator's default TLS port (`zeroburn platform serve --tls-port`).
PLATFORM_TLS_PORT = 8883
# The platform writes its listening ports here when it is running (its ready line as JSON).
PLATFORM_READY_FILE = "serve.json"
# ... and here, kept after it stops: a restart of `platform serve` listens on them again.
PLATFORM_PORTS_FILE = "ports.json"


def _norm(name):
    return name.lower().replace("_", "")


def platform_secret(state_dir, product_key):
    """The product's secret from the platform's SQLite state (read-only; the server may run)."""
    state = Path(state_dir)
    if not state.is_dir():
        raise ValueError(
            f"no platform state in {state}: "
            f"start one with `zeroburn platform serve --state {state}`"
        )
    dbs = [
        p
        for p in sorted(state.iterdir())
        if p.suffix in (".sqlite", ".sqlite3", ".db") and p.is_file()
    ]
    for db in dbs:
        try:
            con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
        except sqlite3.Error:
            continue
        try:
            tables = [
                r[0] for r in con.execute("select name from sqlite_master where type='table'")
            ]
            for table in tables:
                cols = [r[1] for r in con.execute(f'pragma table_info("{table}")')]
                kcol = next((c for c in cols if _norm(c) in ("productkey", "pk")), None)
                scol = next((c for c in cols if _norm(c) in ("productsecret", "secret")), None)
                if kcol and scol:
                    row = con.execute(
                        f'select "{scol}" from "{table}" where "{kcol}" = ?', (product_key,)
                    ).fetchone()
                    if row and row[0]:
                        return row[0]
        except sqlite3.Error:
            continue
        finally:
            con.close()
    raise ValueError(
        f"product {product_key} is not in the platform state {state}: create it with "
        f"`zeroburn platform product add --state {state}` (or pass the product key it printed)"
    )


def platform_port(state_dir):
    """The running platform's TLS port (from its ready file), else the one it used last (what
    a restart listens on again), else its default."""
    for name in (PLATFORM_READY_FILE, PLATFORM_PORTS_FILE):
        try:
            port = json.loads((Path(state_dir) / name).read_text())["mqtts"]
            if type(port) is int and 0 < port < 65536:
                return port
        except (OSError, ValueError, KeyError, TypeError):
            pass
    return PLATFORM_TLS_PORT


def platform_ca(state_dir):
    """Path of the platform's CA certificate (what `--ca` takes for a local-platform board)."""
    try:
        from host_tools.platform.pki import CA_FILE
    except ImportError:
        CA_FILE = "ca.pem"
    return Path(state_dir) / CA_FILE

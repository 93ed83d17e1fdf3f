# The load client against the real platform emulator on loopback: registrations really happen
# (the platform's SQLite file holds the devices) and QoS 1 publishes are stored.
import asyncio
import sqlite3

from host_tools.load import loadgen as lg


def _sqlite(plat, sql, args=()):
    """Read the platform's own SQLite file directly, as any operator tool could."""
    dbs = list(plat.registry.state_dir.glob("*.sqlite3"))
    assert len(dbs) == 1, dbs
    with sqlite3.connect(dbs[0]) as db:
        return db.execute(sql, args).fetchall()


def test_registrations_logins_and_publishes_reach_the_platform(platform):
    pk, ps = platform.registry.add_product()
    ctx = lg.client_ssl_context(platform.ca_path)
    host, port = "127.0.0.1", platform.mqtts_port

    async def scenario():
        reg = await lg.registrations(
            host, port, ctx, pk, ps, 5, prefix="lgtest", concurrency=3, time_limit=30
        )
        bad = await lg.registrations(host, port, ctx, pk, "x" * 16, 1, "lgbad", time_limit=30)
        clients = [await lg.login(host, port, ctx, pk, c) for c in reg["creds"]]
        pairs = [
            (c, f"/{pk}/{cr['deviceName']}/user/update")
            for c, cr in zip(clients, reg["creds"], strict=True)
        ]
        tp = await lg.publish_throughput(pairs, per_client=4, window=2, time_limit=30)
        for c in clients:
            c.close()
        return reg, bad, tp

    reg, bad, tp = asyncio.run(scenario())
    names = sorted(c["deviceName"] for c in reg["creds"])
    assert names == [f"lgtest{i:06d}" for i in range(5)], reg["errors"]
    for c in reg["creds"]:
        assert c["productKey"] == pk and c["clientId"] and c["deviceToken"]
    # a wrong productSecret is refused with CONNACK 4 (PROTOCOL.md section 4), nothing created
    assert bad["ok"] == 0 and bad["errors"] == {"connack-4": 1}
    rows = _sqlite(platform, "SELECT device_name FROM devices WHERE product_key = ?", (pk,))
    assert sorted(r[0] for r in rows) == names
    assert tp["acked"] == 20 and tp["failed_clients"] == 0
    stored = _sqlite(
        platform,
        "SELECT device_name, topic FROM messages WHERE product_key = ? AND topic LIKE ?",
        (pk, "%/user/update"),
    )
    assert len(stored) == 20
    assert {r[0] for r in stored} == set(names)

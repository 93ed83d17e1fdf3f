# App-file OTA end to end: virtual boards running the real firmware against the platform's OTA
# service, over verified TLS (MQTT) and HTTPS (downloads), seen through the platform's SQLite,
# the board's console and its flash.

import pytest
from cryptography.hazmat.primitives import serialization

from tests.firmware.conftest import _ca
from tests.ota.conftest import (
    RUNTIMES,
    flash_digest,
    informed,
    package,
    progress,
    switch,
    task,
    upload,
    wait_until,
)

UP = 150  # seconds an upgrade may take on a loaded machine (two resets, one download)


def online(board, start=0, timeout=60):
    return board.wait_for(r"\[mqtt\] online as ", timeout=timeout, start=start)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_push_while_online_upgrades_and_touches_nothing_else(runtime, plat, make_board):
    board = make_board(runtime)
    dn = board.name
    board.wait_for(r"\[tel\] acked #1", timeout=90)
    before = flash_digest(board)
    root_app = (board.flash / "lib" / "zeroburn").iterdir()
    root = {p.name: p.read_bytes() for p in root_app}
    plat.store.push(upload(plat, package(runtime)), [dn])
    board.wait_for(r"\[ota\] 0\.2\.0 confirmed", timeout=UP)
    wait_until(lambda: (task(plat, dn) or {}).get("state") == "succeeded", 30, "job done")
    assert task(plat, dn)["version"] == "0.2.0"
    assert informed(plat, dn)[0] == "0.1.0" and informed(plat, dn)[-1] == "0.2.0"
    steps = progress(plat, dn)
    assert 1 in steps and 100 in steps and not [s for s in steps if s < 0], steps
    plat.flush()
    assert plat.registry.events(device_name=dn, kind="ota_download")
    assert switch(board) == {"v": "0.2.0", "b": ""}  # confirmed: no probation left
    assert (board.flash / "zb" / "0.2.0" / "zeroburn").is_dir()
    # config.json, ca.pem, the loader, the token and the root's own firmware: all as they were
    assert flash_digest(board) == before
    assert {p.name: p.read_bytes() for p in (board.flash / "lib" / "zeroburn").iterdir()} == root
    console = "\n".join(board.lines)
    assert "MemoryError" not in console, console  # the OTA phase fits the VM's 48K
    board.wait_for(r"\[tel\] acked", timeout=30, start=len(board.lines))


def test_push_while_offline_then_login(plat, make_board):
    board = make_board("cpython")
    dn = board.name
    online(board)
    board.power_cut(restart=False)
    wait_until(lambda: board.state == "off", 10, "power off")
    plat.store.push(upload(plat, package("cpython")), [dn])
    assert task(plat, dn)["state"] == "queued"
    mark = len(board.lines)
    board.start()
    board.wait_for(r"\[ota\] 0\.2\.0 confirmed", timeout=UP, start=mark)
    wait_until(lambda: task(plat, dn)["state"] == "succeeded", 30, "job done")


@pytest.mark.parametrize("ota_settings", [{"push_on_inform": False}])
def test_pull_after_boot_finds_a_missed_push(plat, make_board):
    board = make_board("cpython")
    dn = board.name
    online(board)
    plat.store.push(upload(plat, package("cpython")), [dn])
    mark = len(board.lines)
    board.reset()  # its firmware/get after boot asks for what it missed
    board.wait_for(r"\[ota\] 0\.2\.0 confirmed", timeout=UP, start=mark)
    plat.flush()
    assert not plat.registry.events(device_name=dn, kind="ota_push")
    gets = plat.registry.events(device_name=dn, kind="ota_get")
    assert "0.2.0" in [e["cause"] for e in gets]


@pytest.mark.parametrize("fault", ["corrupt", "wrong_sign"])
def test_bad_package_refused_with_minus_3_nothing_switched(fault, plat, make_board):
    board = make_board("cpython")
    dn = board.name
    online(board)
    before = flash_digest(board)
    plat.store.push(upload(plat, package("cpython")), [dn], fault=fault)
    wait_until(lambda: -3 in progress(plat, dn), UP, "progress -3")
    assert task(plat, dn)["state"] == "failed" and task(plat, dn)["step"] == -3
    assert switch(board).get("v", "") == ""
    assert not (board.flash / "zb" / "0.2.0").exists()
    mark = len(board.lines)
    board.wait_for(r"\[tel\] acked", timeout=60, start=mark)
    assert informed(plat, dn)[-1] == "0.1.0"
    assert flash_digest(board) == before
    assert board.count(r"\[ota\] 0\.2\.0 confirmed") == 0


def test_version_crashing_at_import_is_reverted_with_minus_1(plat, make_board):
    board = make_board("cpython")
    dn = board.name
    online(board)

    def broken(files):
        files["zeroburn/app.py"] = b"raise RuntimeError('a broken build')\n"

    plat.store.push(upload(plat, package("cpython", change=broken)), [dn])
    wait_until(lambda: -1 in progress(plat, dn), UP, "progress -1")
    assert board.count(r"0\.2\.0 on probation: boot 1") >= 1
    assert switch(board).get("v", "") == ""
    assert task(plat, dn)["state"] == "failed" and task(plat, dn)["step"] == -1
    board.wait_for(r"\[tel\] acked", timeout=60, start=len(board.lines))
    assert informed(plat, dn)[-1] == "0.1.0"


def _other_ca():
    return _ca("not the platform's CA")[1].public_bytes(serialization.Encoding.PEM)


def test_version_that_never_reaches_the_cloud_is_reverted(plat, make_board):
    # a CA rotation gone wrong: the new version carries a ca.pem that does not cover the cloud
    board = make_board("cpython")
    dn = board.name
    online(board)
    ca_before = (board.flash / "ca.pem").read_bytes()

    def wrong_ca(files):
        files["ca.pem"] = _other_ca()

    pkg = upload(plat, package("cpython", change=wrong_ca), zb_trial_s=10)
    plat.store.push(pkg, [dn])
    board.wait_for(r"running 0\.2\.0 on probation \(10 s", timeout=UP)
    wait_until(lambda: -1 in progress(plat, dn), UP, "progress -1")
    assert switch(board).get("v", "") == ""
    assert (board.flash / "ca.pem").read_bytes() == ca_before  # the root's own, untouched
    assert task(plat, dn)["step"] == -1


def test_expired_url_leads_to_a_fresh_one(plat, make_board):
    board = make_board("cpython")
    dn = board.name
    online(board)
    # after its firmware/get (whose reply has a fresh URL): the expired push is what it gets
    wait_until(
        lambda: plat.flush() or plat.registry.events(device_name=dn, kind="ota_get"), 30, "get"
    )
    plat.store.push(upload(plat, package("cpython")), [dn], fault="expired")
    board.wait_for(r"\[ota\] 0\.2\.0 confirmed", timeout=UP)
    assert board.count(r"URL refused") >= 1, "\n".join(board.lines)
    assert not [s for s in progress(plat, dn) if s < 0]


def test_truncated_download_reports_minus_2_and_is_tried_again(plat, make_board):
    board = make_board("cpython")
    dn = board.name
    online(board)
    plat.store.push(upload(plat, package("cpython")), [dn], fault="truncate", fault_times=1)
    board.wait_for(r"\[ota\] 0\.2\.0 confirmed", timeout=UP)
    steps = progress(plat, dn)
    assert -2 in steps and steps[-1] == 100, steps
    wait_until(lambda: task(plat, dn)["state"] == "succeeded", 30, "job done")


# Where a power cut strikes: (console line after which, the next write of that kind)
CUTS = [
    (r"\[ota\] upgrade to 0\.2\.0", "file_write"),  # mid download: a staged file half written
    (r"\[ota\] upgrade to 0\.2\.0", "file_close"),  # a staged file just closed
    (r"files verified", "file_close"),  # writing ok.json, the download's last word
    (r"restarting into it", None),  # before the loader's switch
    (r"switched to 0\.2\.0", "file_close"),  # the first probation count
    (r"0\.2\.0 on probation", None),  # probation, before the cloud confirms
]


@pytest.mark.parametrize("after,point", CUTS, ids=[f"{i}" for i in range(len(CUTS))])
def test_power_cut_at_each_step_leaves_a_consistent_board(after, point, plat, make_board):
    board = make_board("cpython")
    dn = board.name
    online(board)
    before = flash_digest(board)
    plat.store.push(upload(plat, package("cpython")), [dn])
    board.wait_for(after, timeout=UP)
    mark = len(board.lines)
    board.power_cut(at=point, off=0.5)
    board.wait_for(r"\[board\] power cut", timeout=60, start=mark)
    # it boots a consistent version, reaches the cloud, and the upgrade completes in the end
    online(board, start=mark, timeout=UP)
    board.wait_for(r"\[ota\] 0\.2\.0 confirmed", timeout=UP, start=mark)
    wait_until(lambda: task(plat, dn)["state"] == "succeeded", 30, "job done")
    assert switch(board) == {"v": "0.2.0", "b": ""}
    assert flash_digest(board) == before


def test_fleet_of_20_upgraded_by_one_product_wide_job(plat, make_board):
    boards = [make_board("cpython", interval_s=30) for _ in range(20)]
    for b in boards:
        online(b, timeout=120)
    job = plat.store.push(upload(plat, package("cpython")), None, rate_per_min=60)
    assert len(plat.store.status(job_id=job)) == 20

    def done():
        rows = plat.store.status(job_id=job)
        return all(r["state"] == "succeeded" and r["version"] == "0.2.0" for r in rows)

    wait_until(done, 300, "20 boards at 0.2.0")
    assert sorted(r["device_name"] for r in plat.store.status(job_id=job)) == sorted(
        b.name for b in boards
    )


def test_package_bigger_than_free_flash_is_refused_with_minus_4(plat, make_board):
    board = make_board("cpython")
    dn = board.name
    online(board)
    plat.store.push(upload(plat, package("cpython")), [dn], fault="oversize")
    wait_until(lambda: -4 in progress(plat, dn), UP, "progress -4")
    assert switch(board).get("v", "") == ""
    plat.flush()
    assert not plat.registry.events(device_name=dn, kind="ota_download")  # never started


def test_stalled_download_gives_up_in_time_and_is_tried_again(plat, make_board):
    board = make_board("cpython")
    dn = board.name
    online(board)
    plat.store.push(upload(plat, package("cpython")), [dn], fault="stall", fault_times=1)
    board.wait_for(r"\[ota\] 0\.2\.0 confirmed", timeout=UP)
    steps = progress(plat, dn)
    assert -2 in steps and steps[-1] == 100, steps

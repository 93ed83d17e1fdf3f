# `zeroburn ota build` and `zeroburn platform ota add|list|push|status`, through the real CLI.
import hashlib
import json
import tarfile

from host_tools import cli
from host_tools.build import otapkg
from host_tools.platform.registry import Registry


def test_ota_build_makes_a_tar_with_the_manifest_first_and_prints_the_sign(tmp_path, capsys):
    out = tmp_path / "pkg.tar"
    ca = tmp_path / "new-ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    argv = ["ota", "build", "--version", "1.2.3", "--out", str(out), "--ca", str(ca), "--json"]
    assert cli.main(argv) == 0
    info = json.loads(capsys.readouterr().out)
    data = out.read_bytes()
    assert info["sign"] == hashlib.sha256(data).hexdigest() and info["signMethod"] == "SHA256"
    assert info["version"] == "1.2.3" and info["module"] == "default"
    with tarfile.open(out) as tar:
        names = tar.getnames()
        manifest = tar.extractfile("manifest.txt").read().decode().splitlines()
        files = {n: tar.extractfile(n).read() for n in names[1:]}
    assert names[0] == "manifest.txt"
    assert manifest[0] == "zeroburn-ota 1 1.2.3 default"
    # every file listed with its size and SHA-256, and nothing else
    listed = {line.split()[2]: line.split()[:2] for line in manifest[1:]}
    assert listed == {n: [hashlib.sha256(d).hexdigest(), str(len(d))] for n, d in files.items()}
    assert "ca.pem" in files and "zeroburn/app.mpy" in files
    # the loader, the board's config and its credential record are never in a package
    assert not {"main.py", "boot.py", "otaboot.mpy", "config.json", "creds.bin"} & set(files)


def test_a_package_may_not_carry_the_loader_or_a_credential_record():
    for bad in ("main.py", "otaboot.mpy", "creds.bin", "../x.py", "zb/active.json"):
        try:
            otapkg.make({bad: b"x"}, "0.2.0")
        except Exception as e:  # noqa: BLE001
            assert "may not be in" in str(e)
        else:
            raise AssertionError(f"{bad} was accepted")


def test_platform_ota_cli_add_push_status(tmp_path, capsys):
    state = str(tmp_path / "platform")
    reg = Registry(state)
    pk, _ = reg.add_product()
    for dn in ("dev-0001", "dev-0002"):
        reg.add_device(pk, dn)
    reg.close()
    pkg = tmp_path / "p.tar"
    pkg.write_bytes(otapkg.make({"zeroburn/x.py": b"x = 1\n"}, "0.2.0"))
    base = ["platform", "ota"]
    argv = [*base, "add", str(pkg), "--product", pk, "--version", "0.2.0", "--state", state]
    assert cli.main([*argv, "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["sign"] == hashlib.sha256(pkg.read_bytes()).hexdigest()
    argv = [*base, "push", str(row["id"]), "--rate", "10", "--state", state, "--json"]
    assert cli.main(argv) == 0
    assert json.loads(capsys.readouterr().out)["devices"] == 2  # the whole product
    assert cli.main([*base, "status", "--state", state, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert sorted((r["device_name"], r["state"]) for r in rows) == [
        ("dev-0001", "queued"),
        ("dev-0002", "queued"),
    ]
    assert cli.main([*base, "push", "99", "--state", state]) == 1  # no such package
    assert "no package 99" in capsys.readouterr().err

# Board definitions, esptool arguments, image checks, the CA bundle, config messages and the
# console follower: pure functions, no board.
import datetime
import importlib
import json
import os
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from host_tools.build import boards, cabundle, config_cmd, staging
from host_tools.errors import ZeroburnError
from host_tools.flash import console, flashing, info, install
from host_tools.paths import ROOT
from tests.flash.conftest import zeroburn

REAL = ["esp32-c3-devkitm-1", "esp32-devkitc", "esp32-s3-devkitc-1"]
UTC = datetime.UTC


# ---- boards ----------------------------------------------------------------------------


def test_every_board_file_loads_and_matches_esptool():
    assert boards.names() == [*REAL, "virtual"]
    for b in boards.load_all():
        assert b.mpy_arch == staging.board_arch(b.name)  # the build reads the same file
        if b.virtual:
            assert (b.flash_offset, b.image_chip_id, b.mpy_arch) == (None, None, None)
            continue
        # offset and image chip id as esptool itself knows the chip
        target = importlib.import_module(f"esptool.targets.{b.chip}")
        rom = next(
            v
            for v in vars(target).values()
            if isinstance(v, type)
            and getattr(v, "CHIP_NAME", None)
            and v.__module__ == target.__name__
        )
        assert b.flash_offset == rom.BOOTLOADER_FLASH_OFFSET, b.name
        assert b.image_chip_id == rom.IMAGE_CHIP_ID, b.name
    got = {b.name: (b.micropython_build, b.flash_offset, b.mpy_arch, b.safe_mode_pin)
           for b in boards.load_all() if not b.virtual}  # fmt: skip
    assert got == {
        "esp32-devkitc": ("ESP32_GENERIC", 0x1000, "xtensawin", 0),
        "esp32-s3-devkitc-1": ("ESP32_GENERIC_S3", 0x0, "xtensawin", 0),
        "esp32-c3-devkitm-1": ("ESP32_GENERIC_C3", 0x0, "rv32imc", 9),
    }


ADC = {"adc1": [36], "adc2": [4], "bits": [12], "full_scale_mv": [1, 2, 3, 4], "adc2_wifi": False}


@pytest.mark.parametrize(
    "change, message",
    [
        ({"chip": "esp8266"}, "chip must be one of"),
        ({"mpy_arch": "armv7m"}, "mpy_arch must be one of"),
        ({"flash_offset": 4096}, "flash_offset must be a hex string"),
        ({"flash_offset": "0x800"}, "multiple of 0x1000"),
        ({"flash_offset": None}, "flash_offset is required for chip esp32"),
        ({"safe_mode_pin": 60}, "safe_mode_pin must be a GPIO number"),
        ({"has_temp_sensor": "yes"}, "has_temp_sensor must be true or false"),
        ({"led_colour": 2}, "unknown key(s) led_colour"),
        ({"description": ""}, "description must be a non-empty string"),
        ({"adc": {"adc1": [36]}}, 'adc must be {"adc1", "adc2"'),
        ({"adc": {**ADC, "full_scale_mv": [950]}}, "adc must be"),
        ({"adc": {**ADC, "bits": [8]}}, "adc must be"),
        ({"adc": {**ADC, "adc1": [24]}}, "adc pin 24 is not a GPIO of this chip"),
    ],
)
def test_board_validation_messages(change, message):
    data = json.loads((ROOT / "boards" / "esp32-devkitc.json").read_text())
    data.update(change)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        boards.parse(data, "x")


def test_virtual_board_must_not_name_an_image(tmp_path):
    data = json.loads((ROOT / "boards" / "virtual.json").read_text())
    data["flash_offset"] = "0x0"
    with pytest.raises(ValueError, match="flash_offset must be null for the virtual board"):
        boards.parse(data, "virtual")
    (tmp_path / "mine.json").write_text("{")
    with pytest.raises(ZeroburnError, match="not valid JSON"):
        boards.load("mine", tmp_path)
    with pytest.raises(ZeroburnError, match=r"unknown board 'nope' \(known: mine\)"):
        boards.load("nope", tmp_path)


# ---- esptool ---------------------------------------------------------------------------


def test_esptool_commands():
    b = boards.load("esp32-devkitc")
    assert install.esptool_commands(b, "/dev/ttyUSB0", "fw.bin") == [
        ["--chip", "esp32", "--port", "/dev/ttyUSB0", "--baud", "460800", "erase-flash"],
        ["--chip", "esp32", "--port", "/dev/ttyUSB0", "--baud", "460800",
         "write-flash", "-z", "0x1000", "fw.bin"],
    ]  # fmt: skip
    c3 = boards.load("esp32-c3-devkitm-1")
    assert install.esptool_commands(c3, "COM3", "c3.bin", baud=115200, erase=False) == [
        ["--chip", "esp32c3", "--port", "COM3", "--baud", "115200",
         "write-flash", "-z", "0x0", "c3.bin"],
    ]  # fmt: skip
    with pytest.raises(ValueError, match="virtual"):
        install.esptool_commands(boards.load("virtual"), "x", "y")


def image(chip_id):
    head = bytearray(64)
    head[0] = 0xE9
    head[12], head[13] = chip_id & 0xFF, chip_id >> 8
    return bytes(head)


def test_image_checks():
    install.check_image(boards.load("esp32-devkitc"), image(0))
    install.check_image(boards.load("esp32-s3-devkitc-1"), image(9))
    with pytest.raises(ValueError, match="built for ESP32-S3, but board esp32-devkitc"):
        install.check_image(boards.load("esp32-devkitc"), image(9))
    with pytest.raises(ValueError, match="not an ESP firmware image"):
        install.check_image(boards.load("esp32-c3-devkitm-1"), b"PK\x03\x04" + bytes(60))


def test_install_micropython_cli(tmp_path):
    fw = tmp_path / "ESP32_GENERIC_S3-v1.24.1.bin"
    fw.write_bytes(image(9) + bytes(1000))
    p = zeroburn("install-micropython", "--device", "/dev/ttyACM0", "--board",
                 "esp32-s3-devkitc-1", "--firmware", fw, "--dry-run")  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == [
        "esptool --chip esp32s3 --port /dev/ttyACM0 --baud 460800 erase-flash",
        f"esptool --chip esp32s3 --port /dev/ttyACM0 --baud 460800 write-flash -z 0x0 {fw}",
    ]
    p = zeroburn("install-micropython", "--device", "/dev/ttyUSB0", "--board",
                 "esp32-devkitc", "--firmware", fw)  # fmt: skip
    assert p.returncode == 1
    assert "built for ESP32-S3, but board esp32-devkitc has an esp32" in p.stderr
    assert "esptool --chip" not in p.stdout  # nothing was run
    # the virtual board is not offered: MicroPython is part of it
    p = zeroburn("install-micropython", "--device", "x", "--board", "virtual", "--firmware", fw)
    assert p.returncode == 2 and "invalid choice: 'virtual'" in p.stderr


# ---- CA bundle -------------------------------------------------------------------------


def test_aliyun_bundle_holds_the_pinned_roots():
    certs = cabundle.certificates(cabundle.aliyun_bundle())
    assert [cabundle.fingerprint(c) for c in certs] == [r.sha256 for r in cabundle.ROOTS]
    by_cn = {
        c.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value: c.not_valid_after_utc
        for c in certs
    }
    assert by_cn["GlobalSign Root CA"].date() == datetime.date(2028, 1, 28)
    assert by_cn["Aliyun IoT Root CA"].year == 2053
    assert {"GlobalSign Root E46", "GlobalSign Root R46", "GlobalSign"} <= set(by_cn)


def test_bundle_refuses_a_changed_root(monkeypatch):
    wrong = cabundle.Root("GlobalSign Root CA (R1)", "00" * 32, "tampered pin")
    monkeypatch.setattr(cabundle, "ROOTS", (wrong, *cabundle.ROOTS[1:]))
    with pytest.raises(ZeroburnError, match=r"no longer ships the pinned root\(s\) GlobalSign"):
        cabundle.aliyun_bundle()


def test_expiry_warnings():
    pem = cabundle.aliyun_bundle()
    _, soon = cabundle.check_bundle(pem, now=datetime.datetime(2026, 11, 29, tzinfo=UTC))
    assert len(soon) == 1 and "GlobalSign Root CA" in soon[0] and "2028-01-28" in soon[0]
    _, none = cabundle.check_bundle(pem, now=datetime.datetime(2026, 6, 1, tzinfo=UTC))
    assert none == []  # 20 months before R1 expires
    # R1 expired: a warning, the others still usable
    _, later = cabundle.check_bundle(pem, now=datetime.datetime(2028, 6, 1, tzinfo=UTC))
    assert any("expired on 2028-01-28" in w for w in later)


def _self_signed(days, ca=True):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test root")])
    now = datetime.datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(days=400))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cabundle.to_pem([cert])


def test_user_bundle_checks():
    with pytest.raises(ValueError, match="every certificate in it has expired"):
        cabundle.check_bundle(_self_signed(-1))
    with pytest.raises(ValueError, match="holds no PEM certificate"):
        cabundle.check_bundle("-----BEGIN PRIVATE KEY-----\nabc\n-----END PRIVATE KEY-----\n")
    with pytest.raises(ValueError, match="certificate #1 does not parse"):
        cabundle.check_bundle("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    _, w = cabundle.check_bundle(_self_signed(3650, ca=False))
    assert w == ["CN=test root is not a CA certificate; a board expects root certificates"]


# ---- config ----------------------------------------------------------------------------


def test_help_covers_the_firmware_schema():
    keys = [f[0] for f in config_cmd.schema().fields()]
    assert list(config_cmd.HELP) == keys
    example = config_cmd.example()
    assert [k for k in example if not k.startswith("_")] == keys


def test_config_init_writes_refuses_overwrite_and_forces(tmp_path):
    out = tmp_path / "device.config.json"
    p = zeroburn("config", "init", "-o", out)
    assert p.returncode == 0, p.stderr
    first = out.read_text()
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    out.write_text(first.replace('"interval_s": 60', '"interval_s": 61'))
    p = zeroburn("config", "init", "-o", out)
    assert p.returncode == 1 and "exists; use --force" in p.stderr
    assert '"interval_s": 61' in out.read_text()  # untouched
    assert zeroburn("config", "init", "-o", out, "--force").returncode == 0
    assert out.read_text() == first
    # the untouched example names what to fill in first
    p = zeroburn("config", "check", out)
    assert p.returncode == 1 and "product_key is required" in p.stderr


CHECKS = [
    ("{", "is not valid JSON"),
    ("[1]", "must hold one JSON object"),
    ({"product_key": "a1-B2"}, "product_key may contain letters, digits, not '-'"),
    ({"product_secret": "x" * 65}, "product_secret must be 1 to 64 characters long"),
    ({"region": None}, "set one of region"),
    ({"signmethod": "sha1"}, "signmethod must be one of hmacsha1, hmacsha256, hmacmd5"),
    ({"instance_id": "iot 06"}, "instance_id may contain letters, digits and -_, not ' '"),
    ({"wifi_ssid": None}, "wifi_ssid is required"),
    ({"interval_s": 0}, "interval_s must be between 1 and 86400 (got 0)"),
    ({"keepalive_s": 1500}, "keepalive_s must be between 30 and 1200 (got 1500)"),
    ({"port": "8883"}, "port must be a whole number"),
    ({"securemode": 3}, "securemode must be between -2 and 2"),
    ({"mode": "sleepy"}, "mode must be one of continuous, duty_cycle"),
    ({"product_secret": None}, "product_secret is required (put it in the file or set "
                               "ZEROBURN_PRODUCT_SECRET)"),
]  # fmt: skip
GOOD = {
    "product_key": "a1B2C3D4E5F",
    "product_secret": "Zq8sEcReT0valUe9",
    "region": "cn-shanghai",
    "wifi_ssid": "lab",
    "wifi_password": "wIfIpAsS-7781",
}


@pytest.mark.parametrize("change, message", CHECKS)
def test_config_check_messages(tmp_path, change, message):
    path = tmp_path / "c.config.json"
    if isinstance(change, str):
        path.write_text(change)
    else:
        path.write_text(json.dumps({k: v for k, v in {**GOOD, **change}.items() if v is not None}))
    p = zeroburn("config", "check", path)
    assert p.returncode == 1
    assert message in p.stderr, p.stderr
    assert GOOD["product_secret"] not in p.stdout + p.stderr


def test_config_check_and_flash_refuse_a_safe_mode_pin_the_chip_lacks(tmp_path):
    """machine.Pin(22) raises ValueError on a C3 (GPIO 0 to 21): refused before flashing."""
    path = tmp_path / "c.config.json"
    path.write_text(json.dumps({**GOOD, "safe_mode_pin": 22}))
    p = zeroburn("config", "check", path, "--board", "esp32-c3-devkitm-1")
    assert p.returncode == 1
    assert "safe_mode_pin 22 is not a GPIO of board esp32-c3-devkitm-1" in p.stderr, p.stderr
    assert zeroburn("config", "check", path, "--board", "esp32-devkitc").returncode == 0
    assert zeroburn("config", "check", path).returncode == 0  # no board named: schema only
    with pytest.raises(ValueError, match="GPIO 0-21"):
        flashing.board_config({"safe_mode_pin": 22}, boards.load("esp32-c3-devkitm-1"))


def test_config_check_masks_secrets_and_takes_them_from_env(tmp_path):
    path = tmp_path / "c.config.json"
    path.write_text(json.dumps(GOOD))
    p = zeroburn("config", "check", path)
    assert p.returncode == 0, p.stderr
    assert "product_secret" in p.stdout and "******** (16 characters), from the file" in p.stdout
    for secret in (GOOD["product_secret"], GOOD["wifi_password"]):
        assert secret not in p.stdout + p.stderr
    path.write_text(json.dumps({k: v for k, v in GOOD.items() if "secret" not in k}))
    env = {"ZEROBURN_PRODUCT_SECRET": "fRoMeNv-5ecret00"}
    p = zeroburn("config", "check", path, "--json", env=env)
    assert p.returncode == 0, p.stderr
    fields = json.loads(p.stdout)["fields"]
    assert fields["product_secret"] == "******** (16 characters), from ZEROBURN_PRODUCT_SECRET"
    assert "fRoMeNv-5ecret00" not in p.stdout + p.stderr


def test_config_init_for_the_platform(tmp_path):
    from host_tools.platform.testing import running_platform

    state = tmp_path / "platform"
    with running_platform(state) as plat:
        pk, ps = plat.registry.add_product()
        out = tmp_path / "dev.config.json"
        p = zeroburn("config", "init", "-o", out, "--platform", state, "--product-key", pk,
                     "--port", plat.mqtts_port, "--signmethod", "hmacsha256")  # fmt: skip
        assert p.returncode == 0, p.stderr
        assert ps not in p.stdout + p.stderr
        d = json.loads(out.read_text())
        assert d["product_secret"] == ps and d["port"] == plat.mqtts_port
        assert d["signmethod"] == "hmacsha256"
        cfg = config_cmd.schema().parse(d)
        assert cfg.endpoint() == f"{pk}.iot-as-mqtt.cn-shanghai.aliyuncs.com"
        assert f"--ca {plat.ca_path}" in p.stdout
        assert zeroburn("config", "check", out).returncode == 0
        # the Python API the virtual board and the demo call
        d2 = config_cmd.platform_config(state, pk, "wrong-secret-123", port=1, interval_s=2)
        assert (d2["product_secret"], d2["port"], d2["interval_s"]) == ("wrong-secret-123", 1, 2)
        p = zeroburn("config", "init", "-o", tmp_path / "x.config.json", "--platform", state,
                     "--product-key", "nosuchprod11")  # fmt: skip
        assert (
            p.returncode == 1 and "product nosuchprod11 is not in the platform state" in p.stderr
        )
        p = zeroburn("config", "init", "-o", tmp_path / "y.json", "--platform", state)
        assert p.returncode == 1 and "--platform needs --product-key" in p.stderr
        # a file holding the secret is refused where git would track it
        tracked = ROOT / "zeroburn-test-tracked.json"
        p = zeroburn("config", "init", "-o", tracked, "--platform", state, "--product-key", pk)
        assert p.returncode == 1 and "git does not ignore it" in p.stderr
        assert not tracked.exists()


# ---- flash helpers ---------------------------------------------------------------------


def test_copy_plan_stale_files_and_board_config():
    staged = {"main.py": "a", "lib/zeroburn/app.mpy": "b", "config.json": "c"}
    copy, same = flashing.plan_copy(staged, {"main.py": "a", "lib/zeroburn/app.mpy": "x"})
    assert (copy, same) == (["config.json", "lib/zeroburn/app.mpy"], ["main.py"])
    board_files = [
        "lib/zeroburn/app.mpy",
        "lib/zeroburn/app.py",  # a .py beside the .mpy would shadow it
        "lib/umqtt/simple.py",
        "lib/umqtt/robust.mpy",  # the user's (mip install umqtt.robust): not ours
        "lib/x.py",
        "zeroburn/app.mpy",  # the layout before /lib: it would shadow /lib/zeroburn
        "umqtt/simple.mpy",
        "data",
    ]
    assert flashing.stale_files(staged, board_files) == [
        "lib/umqtt/simple.py",
        "lib/zeroburn/app.py",
        "umqtt/simple.mpy",
        "zeroburn/app.mpy",
    ]
    c3 = boards.load("esp32-c3-devkitm-1")
    assert flashing.board_config({"_help": {}, "port": 1}, c3) == {"port": 1, "safe_mode_pin": 9}
    assert flashing.board_config({"safe_mode_pin": 4}, c3) == {"safe_mode_pin": 4}


def test_console_follower():
    c = console.Console()
    for line in ["rst:0xc (SW_CPU_RESET)", "[cred] no token for 240ac4000001: will register",
                 "[reg] registered as 240ac4000001 (clientId x, registration #1)",
                 "[mqtt] online as 240ac4000001"]:  # fmt: skip
        c.feed(line)
        assert not c.done
    assert c.stage == "online"
    c.feed("[tel] acked #1")
    assert c.done and c.acked == 1 and c.failure is None
    c = console.Console()
    c.feed("[net] W: OSError (104,)")
    assert not c.done and c.last_warning == "net: OSError (104,)"
    c.feed("[reg] W: refused, CONNACK 4")
    assert c.done and "check product_key/product_secret" in c.failure
    c = console.Console()
    c.feed("[cfg] E: /ca.pem: ValueError('ca.pem holds no PEM certificate',); not starting")
    assert c.failure.startswith("cfg: /ca.pem")
    c = console.Console()
    for line in ["Traceback (most recent call last):", '  File "main.py", line 4, in <module>',
                 "ImportError: no module named 'zeroburn'"]:  # fmt: skip
        c.feed(line)
    assert c.failure == "the firmware crashed: ImportError: no module named 'zeroburn'"
    c = console.Console()
    c.feed("[boot] safe mode (file 'safemode'): application not started")
    assert "safe mode" in c.failure and "rm :safemode" in c.failure


def test_runtime_checks():
    virtual, s3 = boards.load("virtual"), boards.load("esp32-s3-devkitc-1")
    ok = {"impl": "micropython", "ver": [1, 24, 1], "mpy": 6,
          "machine": "Generic ESP32S3 module with ESP32S3"}  # fmt: skip
    info.check_runtime(ok, s3)
    with pytest.raises(ZeroburnError, match=r"MicroPython 1.20.0 .*needs 1.22 or newer"):
        info.check_runtime({**ok, "ver": [1, 20, 0]}, s3)
    with pytest.raises(ZeroburnError, match="not an esp32s3"):
        info.check_runtime({**ok, "machine": "ESP32C3 module with ESP32C3"}, s3)
    with pytest.raises(ZeroburnError, match="runs cpython"):
        info.check_runtime({**ok, "impl": "cpython"}, virtual)


def test_missing_device_is_named(tmp_path):
    for cmd in ("info", "repl"):
        p = zeroburn(cmd, "--device", tmp_path / "ttyUSB9")
        assert p.returncode == 1
        assert f"{tmp_path / 'ttyUSB9'} does not exist: is the board plugged in?" in p.stderr

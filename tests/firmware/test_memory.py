# The full device cycle from .mpy files in a capped GC heap on the MicroPython VM.
import json
import os

from host_tools.build.staging import compile_mpy
from host_tools.paths import FIRMWARE, UMQTT_SIMPLE
from tests.conftest import run_micropython
from tests.firmware.conftest import PK, SECRET, scenario_result
from tests.firmware.cpy import HERE

# The 48K. On this 64-bit VM the full cycle (this harness's fake board and clock included)
# completes in 46K today (45K fails); where the cliff lies moves by a kilobyte or two with the
# heap's layout (docs/firmware.md section 8). ZB_HEAP=40K shows how a failure reads.
HEAP = os.environ.get("ZB_HEAP", "48K")


def stage_mpy(out):
    """The firmware package and umqtt.simple as mpy-cross output, as a board gets them."""
    for src in sorted((FIRMWARE / "zeroburn").glob("*.py")):
        rel = f"zeroburn/{src.name}"
        (out / "zeroburn").mkdir(parents=True, exist_ok=True)
        (out / rel[:-3]).with_suffix(".mpy").write_bytes(compile_mpy(src, rel))
    if (FIRMWARE / "otaboot.py").exists():  # the OTA loader sits beside the package
        (out / "otaboot.mpy").write_bytes(compile_mpy(FIRMWARE / "otaboot.py", "otaboot.py"))
    (out / "umqtt").mkdir(exist_ok=True)
    (out / "umqtt" / "simple.mpy").write_bytes(compile_mpy(UMQTT_SIMPLE, "umqtt/simple.py"))
    # the harness too: compiling it in the VM would cost heap
    (out / "fw_scenarios.mpy").write_bytes(
        compile_mpy(HERE / "mp" / "fw_scenarios.py", "fw_scenarios.py")
    )
    return sum(p.stat().st_size for p in (out / "zeroburn").glob("*.mpy"))


def full_cycle(micropython, tmp_path, certs, broker, heap, extra=None, modules=()):
    """The scenario harness's boot() from .mpy in a `heap` GC heap; extra: scenario keys on top
    (tests/downlink/test_heap.py: thing handlers), modules: harness modules (tests/firmware/mp)
    compiled beside it."""
    flash = tmp_path / "flash"
    # in the "flash" and found by a relative path, as on a board (/lib): every module's path
    # becomes a qstr for good, so a long temporary path would cost heap the board does not pay
    size = stage_mpy(flash / "lib")
    for name in modules:
        (flash / "lib" / f"{name}.mpy").write_bytes(
            compile_mpy(HERE / "mp" / f"{name}.py", f"{name}.py")
        )
    (flash / "ca.pem").write_bytes((certs / "ca.pem").read_bytes())
    cfg = {
        "product_key": PK,
        "product_secret": SECRET,
        "host": "localhost",
        "port": broker.port,
        "wifi_ssid": "lab",
        "interval_s": 1,
    }
    (flash / "scenario.json").write_text(
        json.dumps({"cfg": cfg, "limit_ms": 112000, **(extra or {})})
    )
    proc = run_micropython(
        micropython,
        "import fw_scenarios\nfw_scenarios.boot()\n",
        path=["lib"],
        heap=heap,
        cwd=flash,
        timeout=120,
    )
    return proc, size


def test_full_cycle_fits_the_heap_from_mpy(micropython, tmp_path, certs, broker):
    broker.drop_after = 50  # one reconnect in the middle
    proc, size = full_cycle(micropython, tmp_path, certs, broker, HEAP)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr
    assert "MemoryError" not in proc.stdout
    result = scenario_result(proc.stdout.splitlines()[-1])
    acked = [json.loads(p)["id"] for t, p in broker.published if t.endswith("/user/update")]
    assert len(events := [e for e in broker.events if e[0] == "regnwl"]) == 1, events
    assert len([e for e in broker.events if e[0] == "dropped"]) == 1
    assert len(acked) >= 100 and sorted(set(acked)) == list(range(1, max(acked) + 1))
    assert result["regs"] == 1
    print(f"\n.mpy total {size} bytes, peak GC alloc {result['peak_alloc']} bytes in {HEAP}")


# Validation walks bytes: iterating a str would intern each character as a qstr, for good.
_VALIDATE_NOVEL_TEXT = """
import json, micropython
from zeroburn import config, sign
def validate():
    cfg = config.parse({"product_key": "a1B2C3D4E5F", "product_secret": "Q" * 16,
                        "region": "cn-shanghai", "wifi_ssid": "lab", "device_name_prefix": "Zq-"})
    sign.device_name(b"\\xfe\\xdc\\xba\\x98\\x76\\x54", cfg.device_name_prefix)
    reply = json.dumps({"productKey": "a1B2C3D4E5F", "deviceName": "Zq-fedcba987654",
                        "clientId": "WXYZwxyz%s" % NOVEL, "deviceToken": "HJKLhjkl%s" % NOVEL})
    sign.check_reply(reply, "a1B2C3D4E5F", "Zq-fedcba987654")
validate()  # once, so that what the code itself interns is in
micropython.qstr_info()
NOVEL = "UVuv" + "GMNPgmnp"
validate()  # characters never seen before: none of them may become a qstr
micropython.qstr_info()
"""


def test_validation_interns_no_characters(micropython, tmp_path):
    lib = tmp_path / "lib"
    stage_mpy(lib)
    proc = run_micropython(
        micropython, "NOVEL = 'RSTrst'\n" + _VALIDATE_NOVEL_TEXT, path=[lib], cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    counts = [line.split("n_qstr=")[1].split(",")[0] for line in proc.stdout.splitlines()]
    assert len(counts) == 2 and counts[0] == counts[1], proc.stdout

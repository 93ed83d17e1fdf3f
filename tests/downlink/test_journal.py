# The flash journal torn at every byte of an append, read back and booted from, on both runtimes.
from pathlib import Path

from host_tools.paths import BUILD_LIB, FIRMWARE
from tests.firmware.conftest import run, runtime  # noqa: F401  (fixtures)

HERE = Path(__file__).resolve().parent


def test_journal_torn_at_every_write_loses_nothing_and_boots(run):  # noqa: F811
    run.path = [FIRMWARE, BUILD_LIB, HERE / "mp"]
    out = run.call("dl_journal", "run_all").strip().splitlines()[-1]
    assert out.startswith("OK "), out
    # every cut point of the append was tried (one per byte of the record)
    sweep = int(out.split("check_torn_append_sweep=")[1].split()[0])
    assert sweep > 50

# The shims as strict as the ESP32 port (FACTS.md "The ESP32 port, read from its C sources"):
# what a board refuses, the virtual board refuses too, per chip and MicroPython version, both
# runtimes. A shim more lenient than the port would hide the firmware's next bug.
import pytest

from tests.emulator.test_shims import lit, results

STRICT = """
import machine
def trial(name, fn):
    try:
        print("R", name, repr(fn()))
    except Exception as e:
        print("R", name, repr((type(e).__name__,) + tuple(e.args)))
trial("rtc_id", lambda: machine.RTC(0) and "taken")
trial("rtc_big", lambda: machine.RTC().memory(b"x" * 2049))
trial("rtc_full", lambda: machine.RTC().memory(b"x" * 2048))
trial("wdt_id", lambda: machine.WDT(id=1, timeout=5000) and "started")
trial("wdt_zero", lambda: machine.WDT(timeout=0) and "started")
trial("pin_21", lambda: machine.Pin(21, machine.Pin.IN).value() is not None)
trial("pin_22", lambda: machine.Pin(22, machine.Pin.IN) and "made")
import esp32
trial("mcu", lambda: esp32.mcu_temperature())
trial("raw", lambda: esp32.raw_temperature())
n = esp32.NVS("zb")
trial("nvs_missing", lambda: n.get_blob("nope", bytearray(4)))
n.set_blob("k", b"12345678")
trial("nvs_short", lambda: n.get_blob("k", bytearray(4)))
print("R done", 1)
"""


@pytest.mark.parametrize(
    "chip, micropython, mcu, raw, pin22",
    [
        ("esp32-c3-devkitm-1", "1.22", False, False, False),  # C3: GPIO 0-21; no sensor on 1.22
        ("esp32-c3-devkitm-1", "1.23", True, False, False),
        ("esp32-s3-devkitc-1", "1.28", True, False, False),  # S3: GPIO 22-25 do not exist
        ("esp32-devkitc", "1.28", False, True, True),  # ESP32: raw_temperature only
    ],
)
def test_shims_refuse_what_the_port_refuses(
    runtime, make_board, chip, micropython, mcu, raw, pin22
):
    b = make_board(runtime, STRICT, chip=chip, micropython=micropython)
    b.start()
    b.wait_for("R done", 30)
    r = {k: lit(v) for k, v in results(b).items()}
    assert r["rtc_id"][0] == "TypeError"  # RTC() takes no id
    assert r["rtc_big"][0] == "ValueError"  # 2,048 bytes of RTC memory, no more
    assert r["rtc_full"] is None
    assert r["wdt_id"][0] == "ValueError"  # WDT(id=0) only
    assert r["wdt_zero"][0] == "ValueError"
    assert r["pin_21"] is True
    assert (r["pin_22"] == "made") is pin22, r["pin_22"]
    if not pin22:
        assert r["pin_22"] == ("ValueError", "invalid pin")
    assert (r["mcu"] == 41) is mcu, r["mcu"]
    if not mcu:
        assert r["mcu"][0] == "AttributeError"  # absent, as on that chip and version
    assert (r["raw"] == int(41 * 1.8 + 32)) is raw, r["raw"]
    assert r["nvs_missing"][:2] == ("OSError", -4354)  # ESP_ERR_NVS_NOT_FOUND
    assert r["nvs_short"][:2] == ("OSError", -4364)  # ESP_ERR_NVS_INVALID_LENGTH


def test_reset_causes_as_the_port_reports_them(runtime, make_board):
    """machine.reset() -> HARD_RESET; EN and power -> PWRON_RESET; SOFT_RESET only after a
    soft reboot (modmachine.c: is_soft_reset, then esp_reset_reason())."""
    b = make_board(
        runtime,
        """
import machine, time
c = machine.reset_cause()
r = machine.RTC()
n = len(r.memory())
r.memory(b"x" * (n + 1))
print("R boot", n, c)  # after the write: EN may come any moment from now
if n == 0:
    machine.reset()
if n == 1:
    machine.soft_reset()
while True:
    time.sleep_ms(50)
""",
    )
    b.start()
    b.wait_for("R boot 2 ", 30)
    b.reset()  # EN
    b.wait_for("R boot 3 ", 30)
    boots = [line for line in b.lines if line.startswith("R boot")]
    assert boots == ["R boot 0 1", "R boot 1 2", "R boot 2 5", "R boot 3 1"], boots
    assert "rst:0xc (SW_CPU_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)" in b.lines


def test_wifi_connect_again_while_the_driver_reconnects_raises(runtime, make_board):
    b = make_board(
        runtime,
        """
import network, time
w = network.WLAN(network.STA_IF)
w.active(True)
w.connect("lab", "pw")
while not w.isconnected():
    time.sleep_ms(20)
print("R up", 1)
while w.isconnected():
    time.sleep_ms(20)
print("R dropped", w.status() == network.STAT_CONNECTING)
try:
    w.connect("lab", "pw")
    print("R again", "accepted")
except OSError as e:
    print("R again", repr(e.args[0]))
while not w.isconnected():  # the driver's own reconnection, no second connect()
    time.sleep_ms(20)
print("R back", 1)
w.config(reconnects=2)
while w.isconnected():
    time.sleep_ms(20)
t = time.ticks_ms()
while w.status() == network.STAT_CONNECTING:
    time.sleep_ms(20)
print("R gave_up", w.status(), time.ticks_diff(time.ticks_ms(), t) >= 2000)
w.connect("lab", "pw")
print("R allowed", 1)
""",
    )
    b.start()
    b.wait_for("R up", 20)
    b.wifi(False)
    b.wait_for("R again", 20)
    b.wifi(True)
    b.wait_for("R back", 20)
    b.wifi(False)
    b.wait_for("R allowed", 20)
    r = results(b)
    assert r["dropped"] == "True"  # reconnecting, forever by default (reconnects=0)
    assert lit(r["again"]) == "Wifi Internal Error"  # ESP_ERR_WIFI_CONN, micropython #17661
    assert r["gave_up"] == "201 True"  # STAT_NO_AP_FOUND once 2 reconnections failed


def test_ntptime_errors_as_the_port_raises_them(runtime, make_board):
    b = make_board(
        runtime,
        """
import network, ntptime, time
w = network.WLAN(network.STA_IF)
w.active(True)
w.connect("lab", "pw")
while not w.isconnected():
    time.sleep_ms(20)
print("R ready", 1)
while True:
    try:
        ntptime.settime()
        r = "ok"
    except Exception as e:
        r = (type(e).__name__, e.args[0])
    print("R ntp", repr(r))
    time.sleep_ms(100)
""",
    )
    b.start()
    b.wait_for("R ready", 20)
    b.ntp("short")
    b.wait_for(r"R ntp \('ValueError'", 20)
    b.ntp("lost")
    b.wait_for(r"R ntp \('OSError', 116\)", 20)  # newlib's ETIMEDOUT
    b.ntp(None)
    b.wait_for("R ntp 'ok'", 20)

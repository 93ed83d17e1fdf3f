# machine.ADC as the ESP32 port has it (ports/esp32/machine_adc.c, adc.c): the ADC channels of
# each chip, the port's errors, the values the host holds a pin at, widths and attenuations,
# ADC2 against Wi-Fi on the original ESP32; both runtimes.
import pytest

from tests.emulator.test_shims import WAIT, lit, results

# The port's madc_obj table per chip (GPIOs of ADC1 then ADC2), written out here from the C
# source so that a wrong board file fails this test.
ESP32 = set(range(32, 40)) | {4, 0, 2, 15, 13, 12, 14, 27, 25, 26}
S3 = set(range(1, 21))
C3 = set(range(0, 6))

SCRIPT = (
    WAIT
    + """
import network
from machine import ADC, Pin

P1, P2, N = %(p1)d, %(p2)d, %(n)d


def trial(name, fn):
    try:
        print("R", name, repr(fn()))
    except Exception as e:
        print("R", name, repr((type(e).__name__,) + tuple(e.args)))


ok = []
for g in range(50):
    try:
        ADC(g)
        ok.append(g)
    except ValueError as e:
        assert e.args == ("invalid pin",), e.args
print("R channels", ok)
trial("by_pin", lambda: ADC(Pin(P1)).read())
trial("not_adc", lambda: ADC(Pin(N)))
trial("not_gpio", lambda: ADC(60))
trial("name", lambda: ADC("D2"))
trial("positional", lambda: ADC(Pin(P1), 3))
a = ADC(Pin(P1))
trial("repr", lambda: repr(a))
trial("read", a.read)
trial("u16", a.read_u16)
trial("uv0", a.read_uv)
trial("atten11", lambda: a.atten(ADC.ATTN_11DB))
trial("uv11", a.read_uv)
trial("kw", lambda: ADC(Pin(P1), atten=ADC.ATTN_6DB).read_uv())
trial("kept", lambda: repr(ADC(Pin(P1))))  # the port keeps a channel's atten
trial("bad_atten", lambda: a.atten(4))
trial("default", lambda: ADC(P2).read())
trial("consts", lambda: (ADC.ATTN_0DB, ADC.ATTN_2_5DB, ADC.ATTN_6DB, ADC.ATTN_11DB))
trial("w12", lambda: ADC.WIDTH_12BIT)
trial("w9", lambda: hasattr(ADC, "WIDTH_9BIT"))
print("R ready", 1)
wait_button(0)
trial("live", a.read)
network.WLAN(network.STA_IF).active(True)
trial("adc2_wifi", lambda: ADC(P2).read())
trial("adc1_wifi", a.read)
network.WLAN(network.STA_IF).active(False)
trial("width9", lambda: a.width(9))
trial("read9", a.read)
trial("u16_9", a.read_u16)
trial("adc2_12", lambda: ADC(P2).read())  # the width is the ADC block's: ADC2 still 12 bits
trial("width13", lambda: a.width(13))
print("R done", 1)
"""
)


@pytest.mark.parametrize(
    "chip, micropython, channels, p1, p2, n, mv0, mv11",
    [
        ("virtual", "1.28", ESP32, 34, 4, 5, 950, 2450),
        ("esp32-devkitc", "1.22", ESP32, 36, 27, 23, 950, 2450),
        ("esp32-s3-devkitc-1", "1.28", S3, 1, 11, 21, 950, 3100),
        ("esp32-c3-devkitm-1", "1.22", C3, 0, 5, 6, 750, 2500),
    ],
)
def test_adc_as_the_port(runtime, make_board, chip, micropython, channels, p1, p2, n, mv0, mv11):
    b = make_board(
        runtime, SCRIPT % {"p1": p1, "p2": p2, "n": n}, chip=chip, micropython=micropython
    )
    b.set_adc(p1, 40000)  # 0..65535 of full scale
    b.start()
    b.wait_for("R ready", 30)
    b.set_adc(p1, 1000)
    b.button(0, True)
    b.wait_for("R done", 30)
    r = {k: lit(v) for k, v in results(b).items()}
    assert set(r["channels"]) == channels
    assert r["by_pin"] == 40000 >> 4  # 12 bits
    for key in ("not_adc", "not_gpio", "name"):
        assert r[key] == ("ValueError", "invalid pin"), key
    assert r["positional"][0] == "TypeError"  # atten is keyword-only
    assert r["repr"] == f"ADC(Pin({p1}), atten=0)"
    raw = 40000 >> 4
    assert r["read"] == raw
    assert r["u16"] == raw << 4 | raw >> 8  # the port's scaling of a 12-bit reading
    assert r["uv0"] == raw * mv0 // 4095 * 1000  # whole millivolts, as calibrated
    assert r["atten11"] is None
    assert r["uv11"] == raw * mv11 // 4095 * 1000
    assert 0 < r["uv0"] < r["kw"] < r["uv11"]  # 6 dB lies between
    assert r["kept"] == f"ADC(Pin({p1}), atten=2)"
    assert r["bad_atten"] == ("ValueError", "invalid atten")
    assert r["default"] == 2048  # no value from the host: mid scale
    assert r["consts"] == (0, 1, 2, 3)
    assert r["w12"] == 12  # WIDTH_<n>BIT is n on the port (1.22 on)
    assert r["live"] == 1000 >> 4  # the host changed the input while the board ran
    if chip in ("virtual", "esp32-devkitc"):  # the ESP32's Wi-Fi holds ADC2
        assert r["adc2_wifi"] == ("OSError", 116, "ESP_ERR_TIMEOUT")
        assert r["w9"] is True
        assert r["width9"] is None
        assert r["read9"] == 1000 >> 7
        assert r["u16_9"] == (1000 >> 7) << 7 | (1000 >> 7) >> 2
    else:
        assert r["adc2_wifi"] == 2048
        assert r["w9"] is False
        assert r["width9"] == ("ValueError", "invalid bits")
    assert r["adc1_wifi"] == 1000 >> 4
    assert r["adc2_12"] == 2048
    assert r["width13"] == ("ValueError", "invalid bits")


ADC2_READ = (
    WAIT
    + """
import network
from machine import ADC, Pin

a = ADC(Pin(4))
sta = network.WLAN(network.STA_IF)
sta.active(True)
try:
    a.read_u16()
except OSError as e:
    print("R err", repr(e.args))
try:
    ADC(Pin(25))  # a channel's first use sets its attenuation: adc2_config_channel_atten fails
except ValueError as e:
    print("R new", repr(e.args))
sta.active(False)
print("R new_after", ADC(Pin(25)).read())
print("R after", a.read())
"""
)


def test_adc2_read_while_wifi_started_times_out_on_esp32(runtime, make_board):
    # Wi-Fi started holds ADC2 (IDF's adc2 driver): reading fails with ESP_ERR_TIMEOUT (errno
    # 116), setting up a channel with ValueError("invalid atten"); both work again once stopped
    b = make_board(runtime, ADC2_READ)
    b.set_adc(4, 0xFFFF)
    b.start()
    b.wait_for("R after", 30)
    r = {k: lit(v) for k, v in results(b).items()}
    assert r["err"] == (116, "ESP_ERR_TIMEOUT")
    assert r["new"] == ("invalid atten",)
    assert r["after"] == 4095
    assert r["new_after"] == 2048


def test_set_adc_refuses_what_no_adc_reads(tmp_path):
    from host_tools.emulator.board import VirtualBoard

    b = VirtualBoard(tmp_path / "flash")
    try:
        for bad in (-1, 65536, 1.5, "7"):
            with pytest.raises(ValueError, match="0..65535"):
                b.set_adc(34, bad)
        b.set_adc(34, 123)
        assert (b.ctl / "adc34").read_text() == "123"
        b.set_adc(34)
        assert not (b.ctl / "adc34").exists()
    finally:
        b.stop()

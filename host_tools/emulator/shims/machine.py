# ESP32 `machine` for a virtual board: chip id, resets and their causes, watchdog, RTC, Pin.
# Shim only: never copied to a board (it would shadow the real module there).
import json

import zbboard
from umachine import *  # noqa: F401,F403  (the VM's own stub: idle, mem8, ...)

# Values as on the ESP32 port.
PWRON_RESET = 1
HARD_RESET = 2
WDT_RESET = 3
DEEPSLEEP_RESET = 4
SOFT_RESET = 5
WLAN_WAKE = 2
PIN_WAKE = 2
EXT0_WAKE = 2
EXT1_WAKE = 3
TIMER_WAKE = 4

_RTC_SIZE = 2048


def _gpios():
    """[[lo, hi], ...]: the GPIO numbers the emulated chip has (its board file, "gpio")."""
    return json.loads(zbboard.ctl("chip") or "{}").get("gpio", [[0, 39]])


def unique_id():
    return zbboard.MAC


def reset_cause():
    return int(zbboard.ctl("reset_cause", "1"))


def wake_reason():
    return TIMER_WAKE if reset_cause() == DEEPSLEEP_RESET else 0


def _stop(kind, arg=0):
    # The host restarts the board; this process (or thread) never returns from here.
    zbboard.event("%s %d" % (kind, arg))
    while True:
        zbboard.checkpoint()
        zbboard.sleep_ms(50)


def reset():
    """Chip reset (esp_restart): afterwards reset_cause() is HARD_RESET (ESP_RST_SW)."""
    _stop("reset")


def soft_reset():
    """MicroPython soft reset: VM restarts, boot.py runs; reset_cause() is SOFT_RESET."""
    _stop("soft_reset")


def deepsleep(ms=0):
    _stop("deepsleep", ms)


def lightsleep(ms=0):
    zbboard.sleep_ms(ms)


_freq = [160000000]


def freq(hz=None):
    if hz is None:
        return _freq[0]
    if hz not in (20000000, 40000000, 80000000, 160000000, 240000000):
        raise ValueError("frequency must be 20MHz, 40MHz, 80Mhz, 160MHz or 240MHz")
    _freq[0] = hz


class WDT:
    """The task watchdog: once started it cannot be stopped; the host resets the board when
    feed() is not called within the timeout."""

    def __init__(self, id=0, timeout=5000):
        if id != 0:  # machine_wdt.c: the task watchdog is the only one
            raise ValueError
        if timeout <= 0:
            raise ValueError("WDT timeout too short")
        self.timeout = timeout
        self._fed = zbboard.ticks_ms()
        zbboard.event("wdt %d" % timeout)

    def feed(self):
        # tell the host at most every 100 ms: feeding is cheap on a board and must stay so here
        now = zbboard.ticks_ms()
        if zbboard.ticks_diff(now, self._fed) >= 100:
            self._fed = now
            zbboard.event("feed 0")
        zbboard.checkpoint()


class RTC:
    def __init__(self):  # the port's RTC() takes no arguments (TypeError otherwise)
        pass

    def datetime(self, dt=None):
        import time

        if dt is None:
            t = time.localtime()
            # (year, month, day, weekday, hours, minutes, seconds, subseconds)
            return (t[0], t[1], t[2], t[6], t[3], t[4], t[5], 0)
        secs = time.mktime((dt[0], dt[1], dt[2], dt[4], dt[5], dt[6], 0, 0))
        time._set(secs)

    def init(self, dt):
        self.datetime(dt)

    def memory(self, data=None):
        if data is None:
            return zbboard.ctl_bytes("rtc_memory") or b""
        if len(data) > _RTC_SIZE:
            raise ValueError("buffer too long")
        # no bytes() copy: the board copies into RTC RAM, not into the GC heap
        zbboard.set_ctl("rtc_memory", data)


class Pin:
    IN = 1
    OUT = 3
    OPEN_DRAIN = 7
    PULL_UP = 2
    PULL_DOWN = 1
    IRQ_RISING = 1
    IRQ_FALLING = 2

    def __init__(self, id, mode=-1, pull=-1, value=None):
        if not any(lo <= id <= hi for lo, hi in _gpios()):
            raise ValueError("invalid pin")  # machine_pin.c: no such GPIO on this chip
        self.id = id
        self.mode = mode
        self.pull = pull
        self._out = 0
        if value is not None:
            self.value(value)

    def init(self, mode=-1, pull=-1, value=None):
        self.mode = mode
        self.pull = pull
        if value is not None:
            self.value(value)

    def value(self, v=None):
        if v is None:
            if self.mode == Pin.OUT:
                return self._out
            # an input reads what the host holds it at (a button), else its pull
            held = zbboard.ctl("pin%d" % self.id)
            if held is not None:
                return int(held)
            return 0 if self.pull == Pin.PULL_DOWN else 1
        self._out = 1 if v else 0
        zbboard.event("pin %d %d" % (self.id, self._out))

    def __call__(self, v=None):
        return self.value(v)

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)

    def irq(self, handler=None, trigger=3):
        return None


class Signal:
    def __init__(self, pin, invert=False):
        self.pin = pin
        self.invert = invert

    def value(self, v=None):
        if v is None:
            return self.pin.value() ^ self.invert
        self.pin.value((1 if v else 0) ^ self.invert)

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)


# ---- ADC (ports/esp32/machine_adc.c, adc.c) -------------------------------------------------
# Which GPIOs are ADC1/ADC2 channels, the widths, the millivolts of a full-scale reading per
# attenuation and ADC2's clash with Wi-Fi are the board file's ("adc"); the value on a pin is
# the host's (VirtualBoard.set_adc: 0..65535 of full scale, default mid scale).
_ADC_MID = "32768"
_adc_chip = []  # [the board file's "adc" dict], read once
_adc_atten = {}  # gpio -> atten: the port keeps it per channel, across ADC objects
_adc_bits = {}  # unit -> width in bits: the port's ADC block, shared by its channels


def _adc():
    if not _adc_chip:
        _adc_chip.append(json.loads(zbboard.ctl("chip") or "{}").get("adc") or {})
    return _adc_chip[0]


def _int(v):
    if not isinstance(v, int):  # mp_obj_get_int
        raise TypeError("can't convert %s to int" % type(v).__name__)
    return int(v)


def _wifi_started():
    import network  # the shim: WLAN(...).active(True) is esp_wifi_start

    return any(s["active"] for s in network._ifaces.values())


class ADC:
    """ADC(pin, *, atten): pin a Pin or a GPIO number; ValueError("invalid pin") for one that is
    no GPIO or no ADC channel of the chip. read() is the raw reading (width bits, 12 unless
    width() changed it), read_u16() its 16-bit scaling as the port computes it, read_uv() the
    raw reading over the attenuation's full scale in whole millivolts times 1000."""

    ATTN_0DB = 0
    ATTN_2_5DB = 1
    ATTN_6DB = 2
    ATTN_11DB = 3

    def __init__(self, pin, *, atten=-1):
        gpio = pin.id if isinstance(pin, Pin) else pin
        if type(gpio) is not int or not any(lo <= gpio <= hi for lo, hi in _gpios()):
            raise ValueError("invalid pin")  # machine_pin.c: no such GPIO
        chip = _adc()
        for unit in (1, 2):
            if gpio in chip.get("adc%d" % unit, ()):
                self._unit = unit
                break
        else:
            raise ValueError("invalid pin")  # machine_adc.c: no ADC channel on this GPIO
        self._gpio = gpio
        self.init(atten=atten)

    def init(self, *, atten=-1):
        if atten != -1:
            self.atten(atten)
        elif self._gpio not in _adc_atten:
            self.atten(self.ATTN_0DB)  # a channel's first use: 0 dB

    def __repr__(self):
        return "ADC(Pin(%d), atten=%d)" % (self._gpio, _adc_atten.get(self._gpio, 4))

    def _adc2_busy(self):
        # IDF's adc2 driver on the ESP32: Wi-Fi holds ADC2 from esp_wifi_start to esp_wifi_stop
        return self._unit == 2 and _adc()["adc2_wifi"] and _wifi_started()

    def atten(self, atten):
        atten = _int(atten)
        if not 0 <= atten <= 3 or self._adc2_busy():
            raise ValueError("invalid atten")  # adc*_config_channel_atten failed
        _adc_atten[self._gpio] = atten

    def width(self, bits):
        bits = _int(bits)
        if bits not in _adc()["bits"]:
            raise ValueError("invalid bits")
        _adc_bits[self._unit] = bits

    def _bits(self):
        return _adc_bits.get(self._unit, max(_adc()["bits"]))  # the block's 12 at boot

    def read(self):
        if self._adc2_busy():
            raise OSError(116, "ESP_ERR_TIMEOUT")  # check_esp_err(adc2_get_raw(...))
        u16 = int(zbboard.ctl("adc%d" % self._gpio, _ADC_MID))
        return u16 >> (16 - self._bits())

    def read_u16(self):
        raw = self.read()
        bits = self._bits()
        return raw << (16 - bits) | raw >> (2 * bits - 16)

    def read_uv(self):
        raw = self.read()
        full = (1 << self._bits()) - 1
        return raw * _adc()["full_scale_mv"][_adc_atten[self._gpio]] // full * 1000


for _b in _adc().get("bits", ()):
    setattr(ADC, "WIDTH_%dBIT" % _b, _b)

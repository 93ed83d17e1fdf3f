# The only module that touches the board: chip id, Wi-Fi, watchdog, RTC memory, NVS, sleep, NTP.
import machine
import network


class Hardware:
    """Created at run time by app.main(); tests hand app.run() a fake with the same methods."""

    def __init__(self):
        self.wlan = network.WLAN(network.STA_IF)
        self.wdt = None

    def unique_id(self):
        return machine.unique_id()

    # Wi-Fi
    def wifi_start(self, ssid, password):
        self.wlan.active(True)
        if not self.wlan.isconnected():
            self.wlan.connect(ssid, password)

    def wifi_ok(self):
        return self.wlan.isconnected()

    def rssi(self):
        try:
            return self.wlan.status("rssi")
        except (OSError, ValueError, TypeError):
            return None

    # watchdog: cannot be stopped once started
    def wdt_start(self, seconds):
        self.wdt = machine.WDT(timeout=seconds * 1000)

    def feed(self):
        if self.wdt:
            self.wdt.feed()

    # memory that survives deep sleep and resets
    def rtc_read(self):
        return bytes(machine.RTC().memory())

    def rtc_write(self, blob):
        machine.RTC().memory(blob)

    def nvs(self):
        """esp32.NVS("zeroburn"), or None where the port has no NVS (creds then go to a file)."""
        try:
            import esp32

            return esp32.NVS("zeroburn")
        except (ImportError, AttributeError, OSError):
            return None

    def temperature(self):
        # Each chip's esp32 module has one of the two (ESP32_GENERIC has no mcu_temperature,
        # the S2/S3/C3 builds no raw_temperature): looked up, not called blindly.
        try:
            import esp32
        except ImportError:
            return None
        read = getattr(esp32, "mcu_temperature", None)  # S2, S3, C3 (v1.23+)
        if read is not None:
            try:
                return read()
            except OSError:
                pass
        read = getattr(esp32, "raw_temperature", None)  # original ESP32, Fahrenheit
        if read is not None:
            try:
                return round((read() - 32) / 1.8, 1)
            except OSError:
                pass
        return None

    def deepsleep(self, ms):
        machine.deepsleep(ms)

    def reset(self):
        """A hard reset: RTC memory survives it, RAM does not."""
        machine.reset()

    def safe_mode_pin(self, pin):
        """True while the safe-mode button (active low, e.g. BOOT on GPIO0) is held."""
        p = machine.Pin(pin, machine.Pin.IN, machine.Pin.PULL_UP)
        return p.value() == 0

    def ntp(self, host):
        """Set the RTC from NTP (bounded by ntptime's socket timeout); True on success."""
        import ntptime

        ntptime.host = host
        try:
            ntptime.settime()
            return True
        except (OSError, OverflowError, IndexError):
            return False

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
    def radio_on(self):
        """The station active (RF on, not connecting): ESP-IDF's RNG is truly random from here."""
        self.wlan.active(True)

    def wifi_start(self, ssid, password):
        """Start the station once; after a drop the ESP32 driver reconnects by itself (status
        STAT_CONNECTING), and connect() meanwhile raises OSError("Wifi Internal Error")."""
        w = self.wlan
        w.active(True)
        if w.isconnected() or w.status() == network.STAT_CONNECTING:
            return
        try:
            w.connect(ssid, password)
        except OSError:  # the driver was at it already: let it finish
            pass

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

    # RTC memory: 2,048 bytes (more: ValueError) that survive deep sleep, the watchdog and
    # machine.reset(), not power loss
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
        """The chip's sensor in Celsius where the port has a calibrated one (mcu_temperature:
        S2, S3, C3 from MicroPython 1.23), else None. Never raw_temperature(): the original
        ESP32's is uncalibrated (Fahrenheit, off by tens of degrees), so no value beats it.
        Looked up, not called blindly: ESP32_GENERIC's esp32 module has no mcu_temperature."""
        try:
            import esp32
        except ImportError:
            return None
        read = getattr(esp32, "mcu_temperature", None)
        if read is None:
            return None
        try:
            return read()
        except OSError:
            return None

    def deepsleep(self, ms):
        machine.deepsleep(ms)

    def reset(self):
        """esp_restart(): afterwards reset_cause() is HARD_RESET (EN/power: PWRON_RESET,
        SOFT_RESET only after a Ctrl-D soft reset). RTC memory survives it, RAM does not."""
        machine.reset()

    def safe_mode_pin(self, pin):
        """True while the safe-mode button (active low, e.g. BOOT on GPIO0) is held;
        ValueError for a GPIO the chip does not have."""
        p = machine.Pin(pin, machine.Pin.IN, machine.Pin.PULL_UP)
        return p.value() == 0

    def ntp(self, host):
        """Set the RTC from NTP; True on success. settime() raises OSError (DNS, timeout),
        ValueError (a short reply, struct.unpack), OverflowError: any error is a failure."""
        import ntptime

        ntptime.host = host
        try:
            ntptime.settime()
            return True
        except Exception:
            return False

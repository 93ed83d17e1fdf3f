# `network.WLAN` for a virtual board: the access point is the host, which sets it up, down,
# flapping or with another password through the board's control folder.
import zbboard

STA_IF = 0
AP_IF = 1
STAT_IDLE = 1000
STAT_CONNECTING = 1001
STAT_GOT_IP = 1010
STAT_NO_AP_FOUND = 201
STAT_WRONG_PASSWORD = 202
STAT_BEACON_TIMEOUT = 200
STAT_ASSOC_FAIL = 203
STAT_HANDSHAKE_TIMEOUT = 204
AUTH_OPEN = 0
AUTH_WPA2_PSK = 3

_CONNECT_MS = 300  # a virtual association takes this long, so "connecting" is observable
_RETRY_MS = 1000  # one reconnection attempt of the driver while the AP is missing or refuses
# One state per interface, shared by every WLAN(STA_IF) object, as on the ESP32 port.
_ifaces = {}


def _linked():
    """True when this board has an IP: the station is associated with an AP that is up."""
    return WLAN(STA_IF).isconnected()


class WLAN:
    """The port's station (network_wlan.c): connect() marks the connection requested and the
    driver reconnects by itself after every drop, forever by default (config reconnects=0) or
    n times; meanwhile status() is STAT_CONNECTING and a second connect() raises
    OSError("Wifi Internal Error") (ESP_ERR_WIFI_CONN). Only once the driver gives up does
    status() report the reason (STAT_NO_AP_FOUND, STAT_WRONG_PASSWORD)."""

    def __init__(self, interface_id=STA_IF):
        if interface_id not in (STA_IF, AP_IF):
            raise ValueError("invalid WLAN interface identifier")
        self.interface = interface_id
        if interface_id not in _ifaces:
            _ifaces[interface_id] = {
                "active": False,
                "ssid": None,
                "password": "",
                "since": 0,
                "reconnects": 0,
                "failing": None,  # ticks when the AP went missing or refused, else None
            }
        self._s = _ifaces[interface_id]

    def active(self, is_active=None):
        if is_active is None:
            return self._s["active"]
        self._s["active"] = bool(is_active)
        if not self._s["active"]:
            self._s["ssid"] = None

    def connect(self, ssid=None, key=None, bssid=None):
        if not self._s["active"]:
            raise OSError("Wifi Not Started")
        if self._s["ssid"] is not None and self._state() == STAT_CONNECTING:
            raise OSError("Wifi Internal Error")  # the driver is (re)connecting already
        self._s["ssid"] = ssid
        self._s["password"] = key or ""
        self._s["since"] = zbboard.ticks_ms()
        self._s["failing"] = None

    def disconnect(self):
        self._s["ssid"] = None

    def _ap(self):
        """What the AP answers right now: STAT_GOT_IP, or the reason it does not."""
        if zbboard.ctl("wifi", "up") != "up":
            return STAT_NO_AP_FOUND
        ap_password = zbboard.ctl("wifi_password")
        if ap_password is not None and ap_password != self._s["password"]:
            return STAT_WRONG_PASSWORD
        return STAT_GOT_IP

    def _state(self):
        s = self._s
        if not s["active"] or s["ssid"] is None:
            return STAT_IDLE
        now = zbboard.ticks_ms()
        ap = self._ap()
        if ap == STAT_GOT_IP:
            if s["failing"] is not None:  # the driver's next attempt gets through
                s["failing"] = None
                s["since"] = now
            if zbboard.ticks_diff(now, s["since"]) < _CONNECT_MS:
                return STAT_CONNECTING
            return STAT_GOT_IP
        if s["failing"] is None:
            s["failing"] = now
        tries = zbboard.ticks_diff(now, s["failing"]) // _RETRY_MS
        if s["reconnects"] and tries >= s["reconnects"]:
            return ap  # the driver gave up: the reason shows
        return STAT_CONNECTING

    def status(self, param=None):
        if param is None:
            return self._state()
        if param == "rssi":
            if self._state() != STAT_GOT_IP:
                raise OSError("STA is not connected")
            return int(zbboard.ctl("rssi", "-58"))
        if param == "stations":
            return []
        raise ValueError("unknown status param")

    def isconnected(self):
        return self._state() == STAT_GOT_IP

    def ifconfig(self, config=None):
        if config is not None:
            return None
        if self.isconnected():
            return (
                "192.168.4.%d" % (zbboard.MAC[5] % 200 + 20),
                "255.255.255.0",
                "192.168.4.1",
                "192.168.4.1",
            )
        return ("0.0.0.0", "0.0.0.0", "0.0.0.0", "0.0.0.0")

    def config(self, *args, **kwargs):
        if "reconnects" in kwargs:
            self._s["reconnects"] = max(0, int(kwargs["reconnects"]))
        if args:
            key = args[0]
            if key == "mac":
                return zbboard.MAC
            if key in ("ssid", "essid"):
                return self._s["ssid"] or ""
            if key == "hostname":
                return "esp32"
            if key == "txpower":
                return 20
            if key == "reconnects":
                return self._s["reconnects"]
            raise ValueError("unknown config param")
        return None

    def scan(self):
        if not self._s["active"]:
            raise OSError("Wifi Not Started")
        if zbboard.ctl("wifi", "up") != "up":
            return []
        return [(b"zeroburn-virtual-ap", b"\x02\x00\x00\x00\x00\x01", 6, -58, 3, False)]


def hostname(name=None):
    return "esp32" if name is None else None

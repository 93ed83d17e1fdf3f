# The firmware on a virtual board whose network stalls the ways a real one does: a DNS server
# that never answers (lwIP blocks, unfed, then fails), a TCP peer that accepts and then says
# nothing, a TLS peer that stalls mid-handshake (its first flight at one byte a second, which
# no per-read timeout ever ends), and Wi-Fi that goes and comes back. Each time the board must
# neither hang nor reset (the watchdog at its minimum, 20 s), and must come back online when
# the network does. Both runtimes.
import errno
import json
import socket
import threading
import time

import pytest

from host_tools.build.config_cmd import platform_config
from host_tools.emulator import VirtualBoard
from host_tools.platform.testing import running_platform

HEAP = "96K"  # the shims' own footprint on top of the firmware's (see test_platform.py)


class Switch:
    """A TCP peer in front of the platform. Mode (for new connections): "relay" forwards both
    ways; "stall" accepts and never answers; "trickle" forwards what the device sends but the
    server's bytes at one a second. drop() closes every connection open now."""

    def __init__(self, target_port):
        self.target = target_port
        self.mode = "relay"
        self.conns = []
        self.lock = threading.Lock()
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(16)
        self.port = self.ls.getsockname()[1]
        self.stopping = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopping:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c, self.mode), daemon=True).start()

    def _keep(self, s):
        with self.lock:
            self.conns.append(s)

    def _serve(self, c, mode):
        self._keep(c)
        if mode == "stall":
            self._pump(c, None, 0)
            return
        s = socket.create_connection(("127.0.0.1", self.target))
        self._keep(s)
        threading.Thread(target=self._pump, args=(c, s, 0), daemon=True).start()
        self._pump(s, c, 1.0 if mode == "trickle" else 0)

    def _pump(self, src, dst, delay):
        try:
            while not self.stopping:
                data = src.recv(4096)
                if not data:
                    break
                if dst is None:
                    continue
                if delay:
                    for i in range(len(data)):
                        if self.stopping:
                            return
                        dst.sendall(data[i : i + 1])
                        time.sleep(delay)
                else:
                    dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    if s is not None:
                        s.close()
                except OSError:
                    pass

    def drop(self):
        with self.lock:
            conns, self.conns = self.conns, []
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass

    def close(self):
        self.stopping = True
        self.ls.close()
        self.drop()


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    with running_platform(tmp_path_factory.mktemp("platform"), linger_s=1) as plat:
        yield plat


def test_stalled_dns_tcp_and_tls_neither_hang_nor_reset_the_board(runtime, platform, tmp_path):
    pk, _ = platform.add_product()
    sw = Switch(platform.mqtts_port)
    cfg = platform_config(
        platform.state_dir, pk, port=sw.port, interval_s=1, wdt_s=20, connect_s=5
    )
    try:
        with VirtualBoard(tmp_path / "flash", runtime=runtime, heap=HEAP) as b:
            b.install(config=cfg, ca_pem=platform.ca_path)
            b.start()
            b.wait_for(r"\[tel\] acked #", 90)

            def outage(fault, heal, error):
                n = len(b.lines)
                fault()
                sw.drop()  # the session in progress ends; the next connect meets the fault
                b.wait_for(error, 90, start=n)
                heal()
                m = len(b.lines)
                sw.drop()  # a connect already on its way through the fault gives up now
                b.wait_for(r"\[tel\] acked #", 90, start=m)

            # lwIP fails the lookup after its retries (14 s, unfed: under the 20 s watchdog)
            outage(lambda: b.dns(False), lambda: b.dns(True), r"\[net\] W: OSError \(-202,\)")

            def mode(m):
                return lambda: setattr(sw, "mode", m)

            # the 5 s connect deadline ends both, fed all along (ETIMEDOUT: the errno module's
            # value, Linux's on these runtimes, newlib's 116 on a board)
            timed_out = r"\[net\] W: OSError \(%d,\)" % errno.ETIMEDOUT
            outage(mode("stall"), mode("relay"), timed_out)
            outage(mode("trickle"), mode("relay"), timed_out)
            # Wi-Fi gone and back: the driver reconnects by itself; a second wlan.connect()
            # meanwhile would raise OSError("Wifi Internal Error") (micropython #17661)
            n = len(b.lines)
            b.wifi(False)
            b.wait_for(r"\[net\] W: ", 60, start=n)
            time.sleep(2)
            b.wifi(True)
            b.wait_for(r"\[net\] wifi up", 60, start=n)
            b.wait_for(r"\[tel\] acked #", 90, start=len(b.lines))
            assert not b.count("Wifi Internal Error")
            assert b.reset_causes == [1], b.reset_causes  # no watchdog reset, ever
            assert not b.count(r"rst:0x7")
            assert not b.count(r"\[reg\] registering .*") > 1  # the token was kept throughout
    finally:
        sw.close()


@pytest.mark.parametrize(
    "chip, micropython, temp, pin_ok",
    [
        ("esp32-c3-devkitm-1", "1.22", False, False),  # GPIO 0-21; mcu_temperature from 1.23
        ("esp32-s3-devkitc-1", "1.23", True, False),  # no GPIO 22-25
        ("esp32-devkitc", "1.28", False, True),  # raw_temperature only: uncalibrated, unread
    ],
)
def test_board_specifics_never_stop_boot_nor_give_wrong_values(
    runtime, platform, tmp_path, chip, micropython, temp, pin_ok
):
    """An NTP reply ntptime cannot parse (ValueError) takes the NTP-failed path; a
    safe_mode_pin the chip lacks (machine.Pin raises ValueError) is reported and boot goes on;
    temp_c is sent only where the port has a calibrated sensor (mcu_temperature)."""
    pk, _ = platform.add_product()
    cfg = platform_config(
        platform.state_dir, pk, port=platform.mqtts_port, interval_s=1, safe_mode_pin=22
    )
    with VirtualBoard(
        tmp_path / "flash", runtime=runtime, heap=HEAP, chip=chip, micropython=micropython
    ) as b:
        b.install(config=cfg, ca_pem=platform.ca_path)
        b.ntp("short")
        b.start()
        b.wait_for(r"\[net\] W: NTP failed; no TLS before the clock is set", 60)
        b.ntp(None)
        b.wait_for(r"\[tel\] acked #2", 90)
        assert (b.count(r"\[boot\] W: safe_mode_pin 22: ") == 1) is not pin_ok
        assert not b.count("ValueError")  # neither escaped to a back-off nor to the REPL
        dn = b.mac.replace(":", "")
    stored = platform.registry.messages(device_name=dn, product_key=pk)
    sent = [json.loads(m["payload"]) for m in stored if m["topic"].endswith("/user/update")]
    assert sent and all(("temp_c" in d) is temp for d in sent), sent

# A virtual board's USB serial line: what MicroPython's pyexec speaks (friendly REPL, raw REPL,
# raw-paste, Ctrl-C, Ctrl-D soft reboot) over a pseudo-terminal and an optional TCP port, so
# the real mpremote drives a virtual board as it drives a real one.
import errno
import os
import select
import socket
import struct
import threading
import time
import tty
from pathlib import Path

BANNER = (
    b"MicroPython v1.29.0 on 2026-01-01; ESP32 module (virtual zeroburn board) with ESP32\r\n"
    b'Type "help()" for more information.\r\n'
)
RAW_PROMPT = b"raw REPL; CTRL-B to exit\r\n"
PASTE_WINDOW = 512  # raw-paste flow control window, as pyexec announces it


class SerialBridge:
    """The REPL state machine between the serial line and the board's interpreter."""

    def __init__(self, board):
        self.board = board
        self.writers = []  # callables taking bytes: the pty, a TCP client
        self.mode = "friendly"  # friendly | raw (pyexec_mode_kind; survives a soft reboot)
        self.pending = b""  # bytes typed while code runs (a UART buffer)
        self.line = ""  # friendly REPL: current line
        self.block = []  # friendly REPL: lines of a compound statement
        self.raw = b""  # raw REPL: code so far
        self.paste = None  # raw-paste: code so far (None: not in raw-paste)
        self.paste_seen = 0
        self.fpaste = None  # friendly paste mode (Ctrl-E) text
        self.exec_kind = None  # boot | raw | paste | single
        self.err = b""
        self.skip_lf = False
        self.lock = threading.RLock()
        board.serial = self

    # ---- output --------------------------------------------------------------------------
    def write(self, data):
        for w in list(self.writers):
            w(data)

    def on_output(self, data, stream):
        with self.lock:
            if self.exec_kind in ("raw", "paste") and stream == "stderr":
                self.err += data
                return
            if self.board.kbd_intr:
                # print() output is cooked on a board (LF -> CRLF); the binary mount protocol
                # runs with kbd_intr(-1) and is passed through untouched
                data = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
            self.write(data)

    def boot_runs_main(self, run_main, chip_reset):
        """The board boots: a chip reset starts in the friendly REPL; a soft reboot keeps the
        mode, and from the raw REPL main.py is skipped (pyexec does the same)."""
        with self.lock:
            if chip_reset:
                self.mode = "friendly"
            self.exec_kind = "boot"
            self.line, self.block, self.raw, self.paste = "", [], b"", None
            return run_main and self.mode == "friendly"

    def on_done(self, status):
        with self.lock:
            kind, self.exec_kind = self.exec_kind, None
            if kind == "boot":
                if self.mode == "raw":
                    self.write(RAW_PROMPT + b">")
                else:
                    self.write(BANNER + b">>> ")
            elif kind in ("raw", "paste"):
                err, self.err = self.err, b""
                self.write(b"\x04" + err + b"\x04>")
            elif kind == "single":
                self.write(b">>> ")
            self._process()

    # ---- input ---------------------------------------------------------------------------
    def feed(self, data):
        with self.lock:
            if self.board.running or self.exec_kind is not None:
                if not self.board.kbd_intr:
                    self.board.stdin(data)  # mpremote mount owns the line
                    return
                for i in range(len(data)):
                    c = data[i : i + 1]
                    if c == b"\x03":
                        self.board.interrupt()
                    else:
                        self.pending += c
                return
            self.pending += data
            self._process()

    def _process(self):
        while self.pending and self.exec_kind is None and self.board.state == "on":
            if self.paste is not None:
                self._paste_byte()
                continue
            c = self.pending[0]
            self.pending = self.pending[1:]
            if self.mode == "raw":
                self._raw_byte(c)
            elif self.fpaste is not None:
                self._fpaste_byte(c)
            else:
                self._friendly_byte(c)

    def _soft_reboot(self):
        self.write(b"\r\n")
        self.exec_kind = "boot"  # set now: input waits for the reboot
        self.board.soft_reset()

    def _raw_byte(self, c):
        if c == 0x05 and not self.raw and self.pending[:2] == b"A\x01":
            self.pending = self.pending[2:]
            self.paste = b""
            self.paste_seen = 0
            self.write(b"R\x01" + struct.pack("<H", PASTE_WINDOW))
        elif c == 0x01:
            self.raw = b""
            self.write(b"\r\n" + RAW_PROMPT + b">")
        elif c == 0x02:
            self.mode = "friendly"
            self.raw = b""
            self.write(b"\r\n" + BANNER + b">>> ")
        elif c == 0x03:
            self.raw = b""
        elif c == 0x04:
            if not self.raw:
                self._soft_reboot()
                return
            code, self.raw = self.raw, b""
            self.write(b"OK")
            self.exec_kind = "raw"
            self.board.exec_code("raw", code)
        else:
            self.raw += bytes((c,))

    def _paste_byte(self):
        assert self.paste is not None  # _process calls this in raw-paste only
        c = self.pending.find(b"\x03")
        if c >= 0 and (self.pending.find(b"\x04", 0, c) < 0):
            # Ctrl-C cancels raw-paste input, as pyexec's stdin reader does: end-of-input
            # to the host, then KeyboardInterrupt as the raw REPL reports an error (a host
            # that died mid-paste leaves the board here; the next mpremote sends Ctrl-C)
            self.pending = self.pending[c + 1 :]
            self.paste = None
            self.write(
                b"\x04\x04Traceback (most recent call last):\r\nKeyboardInterrupt: \r\n\x04>"
            )
            return
        i = self.pending.find(b"\x04")
        chunk = self.pending if i < 0 else self.pending[:i]
        self.pending = b"" if i < 0 else self.pending[i + 1 :]
        before = self.paste_seen // PASTE_WINDOW
        self.paste += chunk
        self.paste_seen += len(chunk)
        # one \x01 per window consumed: the host may send that much more
        self.write(b"\x01" * (self.paste_seen // PASTE_WINDOW - before))
        if i >= 0:
            code, self.paste = self.paste, None
            self.write(b"\x04")
            self.exec_kind = "paste"
            self.board.exec_code("raw", code)

    def _friendly_byte(self, c):
        if self.skip_lf and c == 0x0A:
            self.skip_lf = False
            return
        self.skip_lf = False
        if c == 0x01:
            self.mode = "raw"
            self.line, self.block = "", []
            self.write(b"\r\n" + RAW_PROMPT + b">")
        elif c == 0x02:
            self.line, self.block = "", []
            self.write(b"\r\n" + BANNER + b">>> ")
        elif c == 0x03:
            self.line, self.block = "", []
            self.write(b"\r\n>>> ")
        elif c == 0x04:
            if not self.line and not self.block:
                self._soft_reboot()
        elif c == 0x05:
            self.line, self.block = "", []
            self.fpaste = ""
            self.write(b"\r\npaste mode; Ctrl-C to cancel, Ctrl-D to finish\r\n=== ")
        elif c in (0x0D, 0x0A):
            self.skip_lf = c == 0x0D
            self.write(b"\r\n")
            self._line_done()
        elif c in (0x08, 0x7F):
            if self.line:
                self.line = self.line[:-1]
                self.write(b"\x08 \x08")
        elif c == 0x1B:
            # arrow keys and other CSI sequences: no line history here, drop them
            if self.pending[:1] == b"[":
                i = 1
                while i < len(self.pending) and not 0x40 <= self.pending[i] <= 0x7E:
                    i += 1
                self.pending = self.pending[i + 1 :]
        elif c >= 0x20 or c == 0x09:
            self.line += bytes((c,)).decode("latin-1")
            self.write(bytes((c,)))

    def _line_done(self):
        line, self.line = self.line, ""
        if self.block:
            if line.strip():
                self.block.append(line)
                self.write(b"... ")
                return
            code = "\n".join(self.block) + "\n"
            self.block = []
        else:
            if not line.strip():
                self.write(b">>> ")
                return
            if line.rstrip().endswith((":", "\\")):
                self.block = [line]
                self.write(b"... ")
                return
            code = line
        self.exec_kind = "single"
        self.board.exec_code("single", code)

    def _fpaste_byte(self, c):
        assert self.fpaste is not None  # _process calls this in paste mode only
        if c == 0x03:
            self.fpaste = None
            self.write(b"\r\n>>> ")
        elif c == 0x04:
            code, self.fpaste = self.fpaste, None
            self.write(b"\r\n")
            self.exec_kind = "single"
            self.board.exec_code("paste", code)
        else:
            ch = "\n" if c == 0x0D else bytes((c,)).decode("latin-1")
            if c == 0x0A and self.fpaste.endswith("\n"):
                return
            self.fpaste += ch
            self.write(b"\r\n=== " if ch == "\n" else bytes((c,)))


class PtyPort:
    """The serial line as a pseudo-terminal; `link` is kept as a stable symlink to it."""

    def __init__(self, bridge, link=None):
        self.bridge = bridge
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)  # a USB serial port does no line discipline
        os.set_blocking(self.master, False)
        self.path = os.ttyname(self.slave)
        self.link = Path(link) if link else None
        if self.link:
            tmp = self.link.with_name(self.link.name + ".tmp")
            try:
                tmp.unlink()
            except FileNotFoundError:
                pass
            tmp.symlink_to(self.path)
            os.replace(tmp, self.link)
        self._closed = False
        bridge.writers.append(self.write)
        self.thread = threading.Thread(target=self._read, name="pty", daemon=True)
        self.thread.start()

    def write(self, data):
        # A UART sends whether or not anyone listens: when nothing drains the pty for a while,
        # bytes are dropped rather than stalling the board.
        deadline = None
        while data and not self._closed:
            try:
                n = os.write(self.master, data)
                data = data[n:]
            except BlockingIOError:
                now = time.monotonic()
                deadline = deadline or now + 1.0
                if now > deadline:
                    return
                select.select([], [self.master], [], 0.05)
            except OSError:
                return

    def _read(self):
        while not self._closed:
            r, _, _ = select.select([self.master], [], [], 0.2)
            if not r:
                continue
            try:
                data = os.read(self.master, 4096)
            except BlockingIOError:
                continue
            except OSError as e:
                if e.errno == errno.EIO:  # no one has the slave open: keep waiting
                    time.sleep(0.05)
                    continue
                return
            if data:
                self.bridge.feed(data)

    def close(self):
        self._closed = True
        if self.write in self.bridge.writers:
            self.bridge.writers.remove(self.write)
        self.thread.join(2)
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass
        if self.link and self.link.is_symlink():
            self.link.unlink()


class TcpPort:
    """The serial line on 127.0.0.1:port for `mpremote connect socket://127.0.0.1:port`."""

    def __init__(self, bridge, port=0):
        self.bridge = bridge
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", port))
        self.lsock.listen(1)
        self.port = self.lsock.getsockname()[1]
        self.client = None
        self._closed = False
        bridge.writers.append(self.write)
        self.thread = threading.Thread(target=self._serve, name="serial-tcp", daemon=True)
        self.thread.start()

    def write(self, data):
        c = self.client
        if c is not None:
            try:
                c.sendall(data)
            except OSError:
                pass

    def _serve(self):
        while not self._closed:
            try:
                client, _ = self.lsock.accept()
            except OSError:
                return
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.client = client
            try:
                while True:
                    data = client.recv(4096)
                    if not data:
                        break
                    self.bridge.feed(data)
            except OSError:
                pass
            finally:
                self.client = None
                client.close()

    def close(self):
        self._closed = True
        if self.write in self.bridge.writers:
            self.bridge.writers.remove(self.write)
        try:
            self.lsock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.lsock.close()
        c = self.client
        if c is not None:
            try:
                c.close()
            except OSError:
                pass

# What `zeroburn flash` shows and watches: the board's console markers and the progress line.
import re
import sys


class Console:
    """Follows the board's console lines until registration and the first acknowledged
    telemetry, or a failure. Markers agreed with the firmware (firmware/zeroburn/__init__.py)."""

    REGISTERED = re.compile(r"\[reg\] registered as (\S+)")
    LOADED = re.compile(r"\[cred\] token loaded for (\S+)")
    ONLINE = re.compile(r"\[mqtt\] online as (\S+)")
    ACKED = re.compile(r"\[tel\] acked #(\d+)")
    ERROR = re.compile(r"\[(\w+)\] E: (.*)")
    WARNING = re.compile(r"\[(\w+)\] W: (.*)")

    def __init__(self):
        self.registered = None
        self.token_loaded = None
        self.online = None
        self.acked = None
        self.failure = None
        self.last_warning = None
        self.traceback = None

    @property
    def done(self):
        return self.acked is not None or self.failure is not None

    @property
    def stage(self):
        if self.acked is not None:
            return "telemetry"
        if self.online:
            return "online"
        if self.registered or self.token_loaded:
            return "registered"
        return "booting"

    def feed(self, line):
        line = line.strip()
        if self.traceback is not None:
            self.traceback.append(line)
            if line and not line.startswith(("File ", "Traceback")) and not line[0].isspace():
                self.failure = "the firmware crashed: " + line
            return
        if line.startswith("Traceback (most recent call last)"):
            self.traceback = [line]
        elif m := self.REGISTERED.search(line):
            self.registered = m.group(1)
        elif m := self.LOADED.search(line):
            self.token_loaded = m.group(1)
        elif m := self.ONLINE.search(line):
            self.online = m.group(1)
        elif m := self.ACKED.search(line):
            self.acked = int(m.group(1))
        elif line.startswith("[boot] safe mode"):
            self.failure = (
                f"the board is in safe mode ({line.split('(', 1)[-1].rstrip(')')}): remove the "
                "file with `mpremote connect PORT rm :safemode`, or release the button"
            )
        elif m := self.ERROR.search(line):
            self.failure = f"{m.group(1)}: {m.group(2)}"
        elif m := self.WARNING.search(line):
            phase, text = m.groups()
            if phase == "reg" and ("refused, CONNACK 4" in text or "reply rejected" in text):
                # the firmware now waits minutes before trying again: no point following
                self.failure = (
                    f"registration failed ({text}): check product_key/product_secret, that "
                    "dynamic registration is on for the product, and that this deviceName has "
                    "activation slots left"
                )
            else:
                self.last_warning = f"{phase}: {text}"


class Progress:
    """A one-line progress bar on stderr (plain lines when stderr is not a terminal)."""

    STEPS = (
        "check",
        "build",
        "connect",
        "compare",
        "copy",
        "verify",
        "reset",
        "registered",
        "online",
        "telemetry",
    )

    def __init__(self, stream=None, enabled=True, steps=STEPS):
        self.stream = stream or sys.stderr
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.enabled = enabled
        self.steps = steps
        self.shown = None
        self.drawn = False

    def update(self, step, fraction=1.0, detail=""):
        if not self.enabled:
            return
        done = (self.steps.index(step) + fraction) / len(self.steps)
        if self.tty:
            bar = "#" * int(done * 30)
            self.stream.write(f"\r[{bar:<30}] {done * 100:3.0f}% {step} {detail}"[:99] + "\x1b[K")
            self.stream.flush()
            self.drawn = True
        elif (step, detail) != (self.shown or (None, None))[:2]:
            self.stream.write(f"flash: {step} {detail}".rstrip() + "\n")
            self.stream.flush()
        self.shown = (step, detail, fraction)

    def say(self, text):
        """A line above the bar (board console, warnings); the bar is drawn again below it."""
        if self.drawn:
            self.stream.write("\r\x1b[K")
        self.stream.write(text + "\n")
        self.stream.flush()
        if self.drawn and self.shown:
            step, detail, fraction = self.shown
            self.update(step, fraction, detail)

    def end(self):
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False

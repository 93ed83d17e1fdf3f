# The console markers agreed with the firmware (firmware/zeroburn/__init__.py log lines), read
# the same way by `zeroburn flash` (a real board's serial line) and `zeroburn board run` (a
# virtual board's console), so both stop on the same failures with the same reasons.
import re


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
            m = re.search(r"\(([^)]*)\)", line)
            why = m.group(1) if m else "safe mode"
            fix = (
                "release the button and reset the board"
                if "button" in why
                else "remove the file with `mpremote connect PORT rm :safemode`"
            )
            self.failure = f"the board is in safe mode ({why}): {fix}"
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

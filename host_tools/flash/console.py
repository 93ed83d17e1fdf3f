# What `zeroburn flash` shows and watches: the board's console markers (build/markers.py) and
# the progress line.
import sys

from host_tools.build.markers import Console  # noqa: F401  (flash's console watcher)


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
        "credentials",
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

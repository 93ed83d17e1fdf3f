# One boot of the app with fakes for the board, real TLS to the test broker; both runtimes.
# Parameters come from scenario.json in the cwd (the board's "flash"); RTC memory persists in
# rtc.bin between boots. Prints the console, then one "RESULT {json}" line.
import gc
import json


def boot():
    from zeroburn import config  # first, as app.main() does: parsed once, then unloaded

    with open("scenario.json") as f:
        p = json.load(f)
    cfg = config.settings(config.parse(p["cfg"]))
    del config
    from zeroburn import app

    app.unload("config")
    gc.collect()
    from fakes import FakeClock, FakeHW, Stop

    hw = FakeHW()
    try:
        with open("rtc.bin", "rb") as f:
            hw.rtc = f.read()
    except OSError:
        pass
    hw.wifi = p.get("wifi", True)
    clock = FakeClock(p["limit_ms"])
    a = app.App(cfg, hw, clock)
    a.io_ms = p.get("io_ms", 3000)
    a.reply_ms = p.get("reply_ms", 3000)
    reason = None
    try:
        a.run()
    except Stop as e:
        reason = str(e)
    from zeroburn import creds

    with open("rtc.bin", "wb") as f:
        f.write(hw.rtc)
    result = {
        "stop": reason,
        "regs": a.regs,
        "has_token": creds.Store().load() is not None,
        "queued": [n for n, _ in a.buf.items],
        "sleeps": clock.sleeps,
        "now": clock.now,
        "feeds": hw.feeds,
        "peak_alloc": hw.peak,
        "slept": hw.slept,
        "meta": a.buf.meta,
    }
    print("RESULT " + json.dumps(result))

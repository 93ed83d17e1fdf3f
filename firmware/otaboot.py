# The app-file OTA loader (docs/ota.md): which version this boot runs, the probation boot count,
# the way back. It sits at the root beside boot.py and main.py and is never part of an update,
# so a broken update cannot break it. Every error here falls back to the files at the root.
# Names and short strings are chosen among those a board has interned anyway: each new one
# costs heap for good, and the firmware sits just below a qstr pool's growth (docs/ota.md).
import gc
import json
import os
import sys

# /zb/active.json is the one switch, a JSON object: "v" the version to run ("" or absent: the
# files at the root), "b" the one before it (the way back), while on probation "t" boots so far,
# "n" boots allowed, "s" seconds each boot may take to reach the cloud; "r" [step, text]: a
# progress report to send once online. It is only ever replaced whole (a temporary file renamed
# over it), so a power cut leaves the old switch or the new one. Version v lives in /zb/<v>/,
# laid out as the root is.


def read():
    """The switch as a dict ({} when absent or unreadable: the root files run)."""
    try:
        with open("/zb/active.json") as f:
            d = json.loads(f.read())
        return d if isinstance(d, dict) else {}
    except (OSError, ValueError):
        return {}


def write(d):
    with open("/zb/active.json.tmp", "wb") as f:
        f.write(json.dumps(d).encode())
    os.rename("/zb/active.json.tmp", "/zb/active.json")


def select():
    """At boot, before the application is imported: switch to a version downloaded and
    verified, count a probation boot (going back when they are used up) and put the active
    version's folder first on sys.path."""
    try:
        d = read()
        try:  # zeroburn.ota wrote /zb/new/ok.json last, after every check passed
            with open("/zb/new/ok.json") as f:
                n = json.loads(f.read())
            # not yet the switch (the next line is); slices of long literals: short ones such
            # as "/zb/new" would be interned, for good, on every boot
            os.rename("/zb/new/ok.json"[:7], ("/zb/%s/zeroburn" % n["v"])[:-9])
            write({"v": n["v"], "b": d.get("v") or "", "t": 0, "n": n["n"], "s": n["s"]})
            print("[ota] switched to %s" % n["v"])
            d = read()
        except (OSError, ValueError, KeyError, TypeError):
            pass
        v = d.get("v")
        if v:
            f = "/zb/%s/zeroburn" % v
            try:
                os.stat(f)
            except OSError:
                if "t" in d:
                    done("its folder is gone", d)
                    return select()
                return  # a confirmed version gone (files removed by hand): the root files
            if "t" in d:
                d["t"] += 1
                if d["t"] > d.get("n", 3):
                    done("no cloud session in %d boots" % (d["t"] - 1), d)
                    return select()
                write(d)
                print("[ota] %s on probation: boot %d of %d" % (v, d["t"], d.get("n", 3)))
            f = f[:-9]
            d = n = None
            gc.collect()  # the switch's garbage goes now, before the app's long-lived objects
            sys.path.insert(0, f)
    except Exception as e:  # noqa: BLE001  (whatever happens, the board boots)
        print("[ota] E: loader: %r" % (e,))
    finally:
        sys.modules.pop("otaboot", None)  # main.py imports it again only if the app ends


def done(e, d=None):
    """The application ended (e: an exception or why): on probation go back to the version
    before (the root files if none) with -1 to report once online, and reset (not when select()
    does it at boot, d given). Otherwise return: main.py re-raises, as before updates existed."""
    at_boot = d is not None
    if not at_boot:
        d = read()
    if "t" not in d:
        return
    e = e if isinstance(e, str) else "stopped: %r" % (e,)
    m = "%s %s; going back to %s" % (d.get("v"), e, d.get("b") or "the root files")
    print("[ota] E: %s" % m)
    write({"v": d.get("b") or "", "r": [-1, m]})
    if at_boot:
        return
    import machine  # not zeroburn.hw: that is the code that just failed

    machine.reset()

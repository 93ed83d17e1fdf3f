# app.main() as main.py calls it, on both runtimes (apart from fw_scenarios: the memory test
# loads that one, and every name here would be a qstr in its heap).


def main_once():
    """app.main() as main.py calls it: must return (REPL reachable) in safe mode or on a bad
    config, without touching the hardware."""
    from zeroburn import app

    app.main()
    print("RETURNED")

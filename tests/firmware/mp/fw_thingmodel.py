# Thing-model handlers for fw_scenarios (tests/downlink/test_heap.py): a settable property and a
# service, as a small application registers them.
state = {"on": 0}


def _set(v):
    if v not in (0, 1):
        raise ValueError("0 or 1")
    state["on"] = v


def _blink(params):
    return {"blinked": params.get("times", 1) * 2}


def thing_handlers():
    return ({"LightSwitch": (lambda: state["on"], _set)}, {"Blink": _blink}, None)

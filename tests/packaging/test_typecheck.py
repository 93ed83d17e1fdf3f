# The declared shape the type check relies on agrees with the schema: config.Settings declares
# one attribute a SPEC line (with the type the schema gives it), plus endpoint_host.
import sys

from host_tools.paths import FIRMWARE

sys.path.insert(0, str(FIRMWARE))
try:
    from zeroburn import config
finally:
    sys.path.remove(str(FIRMWARE))

TYPES = {"S": "str", "s": "str", "i": "int", "b": "bool"}


def test_settings_declares_every_config_key_with_its_type():
    declared = {
        k: a if isinstance(a, str) else a.__name__
        for k, a in config.Settings.__annotations__.items()
    }
    assert declared.pop("endpoint_host") == "str"
    want = {}
    for key, kind, default, *_ in config.fields():
        t = TYPES[kind]
        want[key] = t if kind in "Sb" or default is not None else f"{t} | None"
    want["securemode"] = "int"  # no default in SPEC, but parse() always derives one
    assert declared == want


def test_parsed_config_has_exactly_the_declared_attributes():
    cfg = config.parse({"product_key": "a1", "product_secret": "s", "region": "cn-shanghai",
                        "wifi_ssid": "lab"})  # fmt: skip
    s = config.settings(cfg)
    assert set(vars(s)) == set(config.Settings.__annotations__)
    assert isinstance(s, config.Settings) and not isinstance(s, config.Config)

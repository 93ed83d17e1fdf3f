# Aliyun's signing rules against PROTOCOL.md's test vectors, and client-id parsing.
import pytest

from host_tools.platform import auth

FIELDS = {"deviceName": "esp32-0001", "productKey": "a1B2C3D4E5F", "random": "1234567890"}


@pytest.mark.parametrize(
    "method, want",
    [
        ("hmacsha1", "0cfe034cd1b0334c03a782a9fd2bef8e04213e02"),
        ("hmacsha256", "c364f6cd007bdf6360820ee149ed5a620c1e259691371f68fde817078a9e4696"),
        ("hmacmd5", "d53ca0bf0ed0af11bb5ecfc82d51c3e2"),
    ],
)
def test_protocol_vectors(method, want):
    assert auth.sign(method, "0123456789abcdef", FIELDS) == want
    auth.check_signature(method, "0123456789abcdef", FIELDS, want.upper())
    with pytest.raises(auth.AuthError, match="bad_signature"):
        auth.check_signature(method, "0123456789abcdeF", FIELDS, want)


def test_article_vector():
    f = {"deviceName": "device1", "productKey": "al123456789", "random": "123"}
    assert (
        auth.sign("hmacsha1", "h1nQFYPZS0mW2352", f) == "d6146f9ad1209149bfaf56341f267283e3e2b4ad"
    )


def test_parse_client_id_ignores_order_and_keeps_unknown_keys():
    prefix, p = auth.parse_client_id("dn|signmethod=hmacsha1,_ss=1,authType=regnwl,ext=3|")
    assert prefix == "dn" and p["authType"] == "regnwl" and p["_ss"] == "1"
    assert auth.parse_client_id("plain") == ("plain", {})
    for bad in ("dn|a=1", "dn|a|", "dn|a=1|b=2|", "x" * 65 + "|a=1|"):
        with pytest.raises(auth.AuthError):
            auth.parse_client_id(bad)


def test_parse_client_id_trims_whitespace_before_keys():
    """Aliyun's Node.js SDK 1.0.1 sends this block; the cloud logs it in."""
    cid = (
        "pk&dn_aliyun-iot-device-sdk-js|securemode=3,\n        signmethod=hmacsha1,"
        "\n        timestamp=1700000000000|"
    )
    prefix, params = auth.parse_client_id(cid)
    assert prefix == "pk&dn_aliyun-iot-device-sdk-js"
    assert params == {"securemode": "3", "signmethod": "hmacsha1", "timestamp": "1700000000000"}


def test_username_rules():
    assert auth.parse_username("esp32-0001&a1B2C3D4E5F") == ("esp32-0001", "a1B2C3D4E5F")
    for bad in ("nope", "abc&pk", "a/bc1&pk", "esp32-0001&p-k"):
        with pytest.raises(auth.AuthError):
            auth.parse_username(bad)

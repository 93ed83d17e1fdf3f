# What zeroburn.mqtt.Client needs from umqtt.simple: present in 1.3.4 and micropython-lib 1.4+.
from umqtt.simple import MQTTClient
from zeroburn import mqtt


def check():
    c = mqtt.Client(b"cid", b"user", b"pw", 60, None)
    for name in ("client_id", "user", "pswd", "keepalive", "sock", "cb", "pid"):
        assert hasattr(c, name), name
    for name in ("publish", "subscribe", "wait_msg", "check_msg", "ping", "set_callback"):
        assert callable(getattr(MQTTClient, name)), name
    assert (c.client_id, c.user, c.pswd, c.keepalive) == (b"cid", b"user", b"pw", 60)
    print("OK")

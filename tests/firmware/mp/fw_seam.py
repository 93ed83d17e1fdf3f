# The network seam on both runtimes: verified TLS transport + the umqtt subclass, real sockets.
import time

from zeroburn import mqtt, net, start


def _elapsed(t0):
    return time.ticks_diff(time.ticks_ms(), t0)


def session(host, port, ca, timeout_ms, cid, token):
    """Log in (connwl), subscribe, publish QoS 1, take a downlink, ping, disconnect."""
    feeds = []
    ctx = start.tls_context(ca)
    opener = lambda: net.open_tls(ctx, host, port, timeout_ms, lambda: feeds.append(1))
    got = []
    c = mqtt.Client(*mqtt.connwl(cid, "240ac4123456", "a1B2C3D4E5F", token), 60, opener)
    c.set_callback(lambda t, m: got.append((t, m)))
    t0 = time.ticks_ms()
    try:
        c.connect()
        c.subscribe(b"/a1B2C3D4E5F/240ac4123456/user/get", 1)
        for i in range(3):
            c.sock.deadline(timeout_ms)
            c.publish(b"/a1B2C3D4E5F/240ac4123456/user/update", b'{"n":%d}' % i, qos=1)
            c.sock.deadline(None)
        while not got:
            c.check_msg()  # the downlink may come right after SUBACK or be read during PUBACKs
            time.sleep_ms(10)
        first = c.check_msg()  # nothing waiting: must come back at once, not block
        c.ping()
        c.sock.deadline(timeout_ms)
        pong = c.wait_msg()  # PINGRESP is handled inside umqtt
        print("TALK", got[0][0].decode(), got[0][1].decode(), first, pong, len(feeds) >= 0)
    except Exception as e:
        print("ERR", type(e).__name__, _elapsed(t0))
    finally:
        c.close()


def connect_only(host, port, ca, timeout_ms):
    """Open TLS and send CONNECT; report the error class and how long it took."""
    t0 = time.ticks_ms()
    feeds = []
    try:
        ctx = start.tls_context(ca)
        opener = lambda: net.open_tls(ctx, host, port, timeout_ms, lambda: feeds.append(1))
        c = mqtt.Client("x|securemode=-2,authType=connwl|", "u", "p", 60, opener)
        try:
            c.connect()
            print("CONNECTED", _elapsed(t0))
        finally:
            c.close()
    except Exception as e:
        kind = "OSError" if isinstance(e, OSError) else type(e).__name__
        print("ERR", kind, _elapsed(t0), len(feeds), e.args[0] if e.args else None)


def big_packet(host, port, ca, timeout_ms, cid, token):
    """A downlink larger than net._MAX_READ (4 KiB) is refused without allocating it."""
    ctx = start.tls_context(ca)
    opener = lambda: net.open_tls(ctx, host, port, timeout_ms, lambda: None)
    c = mqtt.Client(*mqtt.connwl(cid, "240ac4123456", "a1B2C3D4E5F", token), 60, opener)
    c.set_callback(lambda t, m: print("GOT", len(m)))
    try:
        c.connect()
        c.subscribe(b"/a1B2C3D4E5F/240ac4123456/user/get", 1)
        c.sock.deadline(timeout_ms)
        while True:
            c.wait_msg()
    except OSError as e:
        print("ERR OSError", e.args[0])
    finally:
        c.close()


def wrap(host, port, ca, timeout_ms, cid, token, first):
    """QoS 1 publishes with the packet id counter at `first`: each is acknowledged."""
    ctx = start.tls_context(ca)
    opener = lambda: net.open_tls(ctx, host, port, timeout_ms, lambda: None)
    c = mqtt.Client(*mqtt.connwl(cid, "240ac4123456", "a1B2C3D4E5F", token), 60, opener)
    try:
        c.connect()
        c.pid = first
        for i in range(4):
            c.sock.deadline(timeout_ms)
            c.publish(b"/a1B2C3D4E5F/240ac4123456/user/update", b'{"n":%d}' % i, qos=1)
            c.sock.deadline(None)
            print("ACKED", c.pid)
    except Exception as e:
        print("ERR", type(e).__name__, e.args)
    finally:
        c.close()

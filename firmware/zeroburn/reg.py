# Registration (regnwl): the exchange only. Loaded by app only while the board has no token and
# unloaded right after: its code does not sit in the heap while online. The reply's check and
# the record's store are creds.accept's, loaded once the TLS session is closed: the handshake
# needs every block it can get.
import gc

from zeroburn import log, unload
from zeroburn.mqtt import Client, MQTTException


def run(a):
    """regnwl once for App a; returns the delay before the next step (0: go on to log in)."""
    from zeroburn import sign

    ids = sign.regnwl(a.cfg, a.dn, sign.fresh_random())
    del sign
    unload("sign")  # signing code out before the TLS handshake needs the heap
    gc.collect()
    return register(a, ids)


def register(a, ids):
    """regnwl once for App a with ids = sign.regnwl(...) (client id, username, password);
    returns the delay before the next step (0: go on to log in)."""
    cfg = a.cfg
    got = []
    cid, user, password = ids
    c = Client(cid, user, password, cfg.keepalive_s, a.opener)
    c.set_callback(lambda t, m: got.append(m) if t == b"/ext/regnwl" else None)
    log("reg", "registering %s at %s:%d" % (a.dn, a.host, cfg.port))
    try:
        try:
            c.connect()
        except MQTTException as e:
            # 3: the cloud asks to come back later; anything else will not heal by itself
            # (4: wrong productSecret or dynamic registration off): wait long, growing
            log("reg", "W: refused, CONNACK %s" % e.args[0])
            return a.net_delay() if e.args[0] == 3 else a.reg_delay()
        # CONNACK 0: the platform took the attempt, which may have spent an activation slot.
        # Whatever goes wrong from here (deadline, dead link, a huge reply, umqtt's
        # AssertionError at a QoS 2 reply or an odd PINGRESP, MemoryError) waits long: a
        # network back-off would register again within seconds, and 5 slots go in 20 s.
        try:
            c.sock.deadline(a.reply_ms)
            while not got:
                c.wait_msg()
        except Exception as e:
            log("reg", "W: no usable /ext/regnwl reply (%r), nothing stored" % (e,))
            return a.reg_delay()
    finally:
        c.close()  # before any other TLS session is opened
    # the reply's check and the record's store: loaded only now, with the TLS session closed,
    # so that their code is not in the heap during the handshake
    from zeroburn import creds

    return creds.accept(a, got[0])

# Registration (regnwl). Loaded by app only while the board has no token and unloaded right
# after: its code does not sit in the heap while online. The signing code and the check of the
# /ext/regnwl reply (sign.check_reply) are loaded only before and after the TLS session: the
# handshake needs every block it can get.
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
    from zeroburn import sign

    try:
        rec = sign.check_reply(got[0], cfg.product_key, a.dn)
    except ValueError as e:
        log("reg", "W: reply rejected, nothing stored: %s" % e)
        return a.reg_delay()
    del sign
    unload("sign")  # before creds is loaded
    m = a.buf.meta
    m["rn"] = m.get("rn", 0) + 1
    m["rf"] = 0
    a.regs += 1
    a.rec = rec
    try:
        from zeroburn import creds

        creds.store_of(a).save(rec)
    except OSError as e:  # keep going with the token in RAM: the slot is already spent
        log("cred", "E: token not stored: %r" % (e,))
    log("reg", "registered as %s (clientId %s, registration #%d)" % (a.dn, rec["cid"], a.regs))
    return 0

# What a refused token login does, loaded by session only then: count, and after a few refusals
# in a row wipe the token so the board registers again.
from zeroburn.log import log


def refused(a, rc):
    """The token login of App a was refused with CONNACK rc; returns the delay before the next
    step. Bad credentials (4, 5) a few times in a row wipe the token, so the board registers
    again: only then, never for network errors, as every registration burns one of 5 slots."""
    if rc not in (4, 5):
        log("mqtt", "W: login refused, CONNACK %s" % rc)
        return a.net_delay()
    # counted in meta, which deep sleep keeps: duty-cycle wakes count too
    m = a.buf.meta
    k = m["cr"] = m.get("cr", 0) + 1
    n = a.cfg.max_connwl_refusals
    log("mqtt", "W: token refused (CONNACK %d), %d of %d in a row" % (rc, k, n))
    if k < n:
        return a.net_delay()
    log("cred", "W: token revoked: wiping it and registering again")
    m["cr"] = 0
    a.rec = None
    from zeroburn import creds

    creds.store_of(a).wipe()
    # A token that worked before was revoked by the operator: register again at once. One
    # refused before it ever worked would burn slots in a loop: wait long.
    return 0 if m.pop("ok", 0) or not m.get("rn") else a.reg_delay()

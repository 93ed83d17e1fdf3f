# Message ids that stay unique across cold boots: before ids above the flash reservation go out,
# the next block is reserved in flash (a cold boot starts above it). A phase module: app.step()
# runs it before each login (no TLS up yet), then drops it from the heap.
from micropython import const

from zeroburn import log, telemetry

_BLOCK = const(10000)  # ids reserved at a time: one flash write per 10,000 messages


def run(a):
    """Reserve the next block when fewer than 100 ids are left (or none was reserved)."""
    m = a.buf.meta
    if a.buf.seq + 100 < m.get("t", 0):
        return
    top = a.buf.seq + _BLOCK
    try:
        if a.nvs is not None:
            a.nvs.set_blob("ids", top.to_bytes(4, "big"))
            a.nvs.commit()
        else:
            # file names of more than 10 characters: no qstrs (boards with NVS never load them)
            with open("ids_reserved.tmp", "wb") as f:
                f.write(b"%d" % top)
            import os

            os.rename("ids_reserved.tmp", "ids_reserved.txt")
    except OSError as e:  # ids may repeat after the next power cut; keep sending meanwhile
        log("tel", "E: id reservation not stored: %r" % (e,))
        return
    m["t"] = top
    telemetry.save(a)

# zeroburn firmware: self-registering Aliyun IoT device (regnwl, then connwl telemetry).
# log() and unload() live here rather than in a module of their own: a board pays every module's
# name and path as qstrs for good (and phase modules import unload() without importing app).
import sys

VERSION = "0.1.0"
__version__ = VERSION  # the name mip and frozen builds use; one source

# Console lines: "[phase] message"; warnings "[phase] W: ...", errors "[phase] E: ...".
# Stable markers others parse (tests, `board run --until-messages`), listed in the README:
#   [reg] registered as <dn> (clientId <cid>, ...)   [cred] token loaded for <dn> ...
#   [mqtt] online as <dn>                             [tel] acked #<n>
# Never pass productSecret, deviceToken or an HMAC here.


def log(phase, msg):
    print("[%s] %s" % (phase, msg))


def unload(name):
    """Forget zeroburn.<name> (sys.modules and the package attribute) so the GC frees its code;
    the next import loads it again."""
    sys.modules.pop("zeroburn.%s" % name, None)
    try:
        delattr(sys.modules["zeroburn"], name)
    except (AttributeError, KeyError):
        pass

# The OTA phase (docs/ota.md), loaded by app only for an upgrade, right after a reset and with
# MQTT's modules out of the heap: the package downloaded over verified HTTPS into /zb/new while
# every byte is hashed, each file checked against the manifest and the whole against the package
# sign, then /zb/new/ok.json written, last. It always ends in a reset: the loader (otaboot) then
# switches to the new version, on probation; a failure leaves the running version as it was
# and a report (-2 download, -3 verification, -4 flash) for the next login.
import binascii
import gc
import hashlib
import json
import os

import otaboot
from micropython import const

from zeroburn import log, net

_BLOCK = const(512)  # tar block: every read and write (in the downlink buffer, no new block)
_JOB = const(7)  # indices into App.ota (zeroburn.otainit owns the list)
_BUF = const(9)
_TRIAL_BOOTS = const(3)  # probation, unless the package's extData says otherwise (bounded)
_TRIAL_S = const(600)
_NEVER = ("boot.py", "main.py", "otaboot.py", "otaboot.mpy", "creds.bin")


class Fail(Exception):
    """args: (step, why): the progress step to report (-2, -3, -4; 0: the URL was refused, as
    an expired one is, no report: the next firmware/get brings a fresh one)."""


def run(a):
    o = a.ota
    j, o[_JOB] = o[_JOB], None
    v = j["version"]
    try:
        # Aliyun: letters, digits, . - _, 1 to 64 characters; here it also names a folder
        ok = isinstance(v, str) and 0 < len(v) <= 64 and v[0] != "." and v not in ("new",)
        for b in v.encode() if ok else b"":
            ok = ok and (48 <= b <= 57 or 65 <= b <= 90 or 97 <= b <= 122 or b in b"._-")
        if not ok or v.startswith("active"):
            raise Fail(-3, "bad version %r" % (v,))
        d = otaboot.read()
        for e in list(os.ilistdir("/zb")):  # older versions and a half download go
            if e[1] == 0x4000 and e[0] not in (d.get("v"), d.get("b")):
                rmtree("/zb/" + e[0])
        s = os.statvfs("/")
        if s[0] * s[4] < int(j["size"]) + 8 * 4096:
            raise Fail(-4, "%d bytes free on flash, %s needed" % (s[0] * s[4], j["size"]))
        fetch(a, j, int(j["size"]), memoryview(o[_BUF])[:_BLOCK])
        ext = j.get("extData")
        ext = ext if isinstance(ext, dict) else {}
        # the last write of a good download: the loader switches to it at the next boot
        with open("/zb/new/ok.json", "wb") as f:
            f.write(
                json.dumps(
                    {
                        "v": v,
                        "n": bounded(ext.get("zb_trial_boots"), _TRIAL_BOOTS, 1, 10),
                        "s": bounded(ext.get("zb_trial_s"), _TRIAL_S, 10, 3600),
                    }
                ).encode()
            )
        log("ota", "%s downloaded and verified: restarting into it" % v)
    except Exception as e:  # noqa: BLE001  (nothing may stop the reset below)
        step, why = e.args if isinstance(e, Fail) else (-2, "download: %r" % (e,))
        e = None
        gc.collect()
        try:
            log("ota", "E: %s: %d %s" % (v, step, why))
            if step:  # for otainit to report at the next login
                with open("/zb/report.json", "wb") as f:
                    f.write(json.dumps([step, "%s: %s" % (v, why)]).encode())
                # a failed attempt waits (5 to 10 s) before the reset and the firmware/get after
                from zeroburn.app import jittered

                a.clock.sleep_ms(jittered(10000, 0, 10000), a.feed)
        finally:
            a.reset("update failed")
    gc.collect()
    a.reset("update ended")  # what is left in /zb/new goes at the next boot (otainit)


def rmtree(path):
    try:
        entries = list(os.ilistdir(path))
    except OSError:
        return
    for e in entries:
        if e[1] == 0x4000:
            rmtree(path + "/" + e[0])
        else:
            os.remove(path + "/" + e[0])
    os.rmdir(path)


def bounded(x, default, lo, hi):
    try:
        return min(hi, max(lo, int(x)))
    except (TypeError, ValueError):
        return default


def get(a, url):
    """The HTTPS response to GET url, past its headers: (transport, content length)."""
    if url[:8] != "https://":
        raise Fail(-2, "not an https URL")
    i = url.find("/", 8)
    host, path = url[8:i], url[i:]
    port = 443
    if ":" in host:
        host, port = host.split(":")
        port = int(port)
    t = net.open_tls(a.ctx, host, port, a.io_ms, a.feed)  # the same ca.pem as MQTT
    try:
        t.write(
            ("GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % (path, host)).encode()
        )
        head = b""
        while head[-4:] != b"\r\n\r\n":
            if len(head) > 2048:
                raise Fail(-2, "HTTP headers too long")
            head += t.read(1) or b""  # blocking: exactly 1 byte or OSError
        lines = head.decode().split("\r\n")
        code = int(lines[0].split()[1])
        if code == 403:
            raise Fail(0, "URL refused (expired?)")
        if code != 200:
            raise Fail(-2, "HTTP %d" % code)
        for line in lines:
            if line[:15].lower() == "content-length:":
                return t, int(line[15:])
        raise Fail(-2, "no Content-Length")
    except BaseException:
        t.close()
        raise


def fetch(a, j, size, buf):
    """Download j's package into /zb/new, checking as it streams; Fail if it does not pass."""
    method = str(j.get("signMethod")).lower()
    if method not in ("sha256", "md5"):
        raise Fail(-3, "sign method %s" % method)
    whole = getattr(hashlib, method)()
    t, left = get(a, j["url"])
    n = want = 0  # files checked, files the manifest lists
    try:
        if left != size:
            raise Fail(-3, "%d bytes, the push said %d" % (left, size))
        t.deadline(60000 + left // 8)  # a slow link may take its time, a stalled one not
        while left:
            t.readinto(buf)
            whole.update(buf)
            left -= _BLOCK
            if not buf[0]:
                continue  # the end-of-archive blocks
            name = bytes(buf[:100]).split(b"\0", 1)[0].decode()
            k = int(bytes(buf[124:136]).strip(b"\0 ").decode() or "0", 8)
            if buf[156] not in (0, 48) or not k or (k + _BLOCK - 1) // _BLOCK * _BLOCK > left:
                raise Fail(-3, "%s: not a plain file in the archive" % name)
            if not n and not want:
                if name != "manifest.txt":
                    raise Fail(-3, "the manifest is not first")
                name = "/zb/new/manifest.txt"
            elif not safe(name):
                raise Fail(-3, "%s may not be in a package" % name)
            else:
                name = "/zb/new/" + name
            digest = member(t, buf, whole, k, name)
            left -= (k + _BLOCK - 1) // _BLOCK * _BLOCK
            if want:
                if not listed(digest, k, name[8:]):
                    raise Fail(-3, "%s is not in the manifest as it came" % name[8:])
                n += 1
            else:
                want = manifest(j)
    finally:
        t.close()
    if binascii.hexlify(whole.digest()).decode() != str(j.get("sign")).lower():
        raise Fail(-3, "package sign mismatch")
    if not want or n != want:
        raise Fail(-3, "%d of %d files" % (n, want))
    log("ota", "%d files verified" % n)


def safe(p):
    # never the loader (the way back) nor the credential record (per device; a package is not)
    if p[:1] == "/" or "\\" in p or p[:3] == "zb/" or p in _NEVER:
        return False
    for part in p.split("/"):
        if part in ("", ".", ".."):
            return False
    return True


def member(t, buf, whole, k, path):
    """Write the next k archive bytes to path (folders made), hashed into whole too; returns
    their SHA-256 in hex."""
    p = ""
    for part in path.split("/")[1:-1]:
        p += "/" + part
        try:
            os.mkdir(p)
        except OSError:
            pass
    h = hashlib.sha256()
    try:
        f = open(path, "wb")
    except OSError as e:
        raise Fail(-4, "open %s: %r" % (path, e))
    try:
        while k > 0:
            t.readinto(buf)
            whole.update(buf)
            mv = buf[: min(k, _BLOCK)]
            h.update(mv)
            try:
                f.write(mv)
            except OSError as e:
                raise Fail(-4, "write %s: %r" % (path, e))
            k -= len(mv)
    finally:
        f.close()
    return binascii.hexlify(h.digest()).decode()


def manifest(j):
    """How many files the manifest (on flash now) lists, once it is for j and fits the flash.
    Its first line: "zeroburn-ota 1 <version> <module>", then "<sha256> <size> <path>" each."""
    n = need = 0
    with open("/zb/new/manifest.txt") as f:
        head = f.readline().split()
        if head[:2] != ["zeroburn-ota", "1"] or head[2:] != [j["version"], "default"]:
            raise Fail(-3, "the manifest is not for %s" % j["version"])
        for line in f:
            need += (int(line.split()[1]) // 4096 + 2) * 4096  # littlefs: whole blocks + meta
            n += 1
    s = os.statvfs("/")
    if s[0] * s[4] < need:
        raise Fail(-4, "%d bytes needed on flash" % need)
    return n


def listed(digest, k, path):
    """Whether the manifest has this file with this size and SHA-256 (read a line at a time)."""
    want = "%s %d %s" % (digest, k, path)
    with open("/zb/new/manifest.txt") as f:
        for line in f:
            if line.rstrip("\n") == want:
                return True
    return False

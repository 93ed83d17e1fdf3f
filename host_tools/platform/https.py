# HTTPS dynamic registration of pre-registered devices (PROTOCOL.md section 8):
# POST /auth/register/device on iot-auth.<region>.aliyuncs.com, as Aliyun's Node.js SDK uses it.
import asyncio
import json
import logging
from typing import Literal, cast
from urllib.parse import parse_qs

from host_tools.platform import auth, registry
from host_tools.platform.auth import AuthError

log = logging.getLogger("zeroburn.platform")

PATH = "/auth/register/device"
MAX_HEAD, MAX_BODY = 8 * 1024, 8 * 1024
# The JSON `code` of each refusal (the HTTP status stays 200, as Aliyun's API answers business
# errors). Only 200 is documented; the rest are [UNK] (PROTOCOL.md section 8), so they are the
# setting `https_codes`; these defaults follow HTTP's own meanings.
DEFAULT_HTTPS_CODES = {
    "bad_params": (460, "request parameter error"),
    "bad_signmethod": (460, "signMethod must be hmacsha1, hmacsha256 or hmacmd5"),
    "bad_signature": (401, "sign check error"),
    "unknown_product": (404, "product not found"),
    "dynamic_registration_off": (403, "dynamic registration is off for this product"),
    "unknown_device": (404, "device not found: create it first (pre-registration)"),
    "device_disabled": (403, "device is disabled"),
    "server_error": (500, "internal error"),
}


def _register(conn, pk, dn):
    ds = registry.issue_device_secret(conn, pk, dn)
    registry.add_event(conn, "register", pk, dn, None, "register", "https")
    return ds


class Request(asyncio.Protocol):
    """One HTTPS connection: one request, one answer, then close (Connection: close)."""

    def __init__(self, plat):
        self.plat = plat
        self.buf = b""
        # (method, path, Content-Length) once parsed; False once answered
        self.head: tuple[str, str, int] | Literal[False] | None = None
        self.transport: asyncio.Transport | None = None
        self.timer = None

    def connection_made(self, transport):
        # create_server over TCP (with ssl=) hands a stream transport
        self.transport = t = cast(asyncio.Transport, transport)
        # the whole request within the connect deadline, as an MQTT client's CONNECT
        timeout = self.plat.settings["connect_timeout_s"]
        self.timer = self.plat.loop.call_later(timeout, t.abort)

    def connection_lost(self, exc):
        if self.timer:
            self.timer.cancel()

    def data_received(self, data):
        if self.head is False:
            return
        self.buf += data
        if self.head is None:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > MAX_HEAD:
                    self.answer(431, {"code": 431, "message": "request header too large"})
                return
            self.head = self.parse_head(self.buf[:end].decode("latin-1"))
            self.buf = self.buf[end + 4 :]
            if self.head is None:
                return self.answer(400, {"code": 400, "message": "bad request"})
        method, path, length = self.head
        if len(self.buf) < length:
            return
        self.head = False  # answered (or answering): later bytes are ignored
        if path.split("?", 1)[0] != PATH:
            return self.answer(404, {"code": 404, "message": f"no such path {path}"})
        if method != "POST":
            return self.answer(405, {"code": 405, "message": "POST only"})
        self.register(self.buf[:length])

    def parse_head(self, text):
        lines = text.split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            return None
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                try:
                    length = int(value.strip())
                except ValueError:
                    return None
        if not 0 <= length <= MAX_BODY:
            return None
        return parts[0], parts[1], length

    def register(self, body):
        plat = self.plat
        try:
            form = parse_qs(body.decode("utf-8"), keep_blank_values=True)
        except UnicodeError:
            form = {}
        f = {k: v[0] for k, v in form.items()}
        pk, dn = f.get("productKey"), f.get("deviceName")
        try:
            if not (pk and dn and f.get("random") and f.get("sign")):
                raise AuthError("bad_params", "productKey, deviceName, random and sign needed")
            if not auth.DEVICE_NAME.match(dn) or not auth.PRODUCT_KEY.match(pk):
                raise AuthError("bad_params", "malformed productKey or deviceName")
            method = f.get("signMethod", "hmacsha1").lower()
            if method not in auth.SIGN_METHODS:
                raise AuthError("bad_signmethod")
            prod = registry.product(plat.rconn, pk)
            if prod is None:
                raise AuthError("unknown_product")
            if not prod["dynamic_registration"]:
                raise AuthError("dynamic_registration_off")
            fields = {"deviceName": dn, "productKey": pk, "random": f["random"]}
            auth.check_signature(method, prod["product_secret"], fields, f["sign"])
        except AuthError as e:
            return self.refuse(e, pk, dn)
        plat.writer.submit(_register, (pk, dn), lambda r: self.registered(r, pk, dn))

    def registered(self, result, pk, dn):
        if isinstance(result, Exception):
            err = result if isinstance(result, AuthError) else AuthError("server_error")
            return self.refuse(err, pk, dn)
        data = {"productKey": pk, "deviceName": dn, "deviceSecret": result}
        self.answer(200, {"code": 200, "data": data, "message": "success"})

    def refuse(self, err, pk, dn):
        codes = self.plat.https_codes
        code, message = codes.get(err.cause, codes["server_error"])
        log.info("platform: HTTPS registration of %s refused (%s) code %d", dn, err.cause, code)
        detail = "https" + (": " + err.detail if err.detail else "")
        self.plat.writer.event("refuse", pk, dn, None, err.cause, detail)
        self.answer(200, {"code": code, "message": message})

    def answer(self, status, body):
        self.head = False
        assert self.transport is not None  # set by connection_made, before any data
        if self.transport.is_closing():
            return
        payload = json.dumps(body, separators=(",", ":")).encode()
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}
        head = (
            f"HTTP/1.1 {status} {reason.get(status, 'Error')}\r\n"
            "Content-Type: application/json;charset=utf-8\r\n"
            f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
        )
        self.transport.write(head.encode() + payload)
        self.transport.close()

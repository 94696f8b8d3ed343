"""Browser-facing guards: DNS rebinding on the keyless loopback default, and cross-origin writes.

- Keyless on a loopback address (the default), any web page could reach the server through a DNS
  name it controls that resolves to 127.0.0.1 (DNS rebinding). So only loopback host names are
  answered there, as Jupyter does: `localhost` and `*.localhost`, 127.0.0.0/8 and `[::1]`, with any
  port. Other `Host` values get 403. With a key, or a non-loopback --host, the Host is not checked.
- A page on another origin can send CORS-"simple" POSTs (multipart, text/plain) without a preflight.
  A state-changing request (POST, PUT, PATCH, DELETE) whose `Origin` is neither this server's own
  origin nor one named with --cors gets 403. Requests without Origin (curl, SDKs) are not affected.
"""

from __future__ import annotations

import ipaddress

from edgeproof.serve.middleware import escape, send_json

WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def host_name(value: str) -> str:
    """'127.0.0.1:8000' -> '127.0.0.1', '[::1]:80' -> '::1', 'Localhost.' -> 'localhost'."""
    v = value.strip().lower()
    if v.startswith("["):
        return v[1:v.find("]")] if "]" in v else v
    return v.rsplit(":", 1)[0].rstrip(".") if v.count(":") == 1 else v.rstrip(".")


def is_loopback_name(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _header(scope, name: bytes) -> str | None:
    for k, v in scope["headers"]:
        if k == name:
            return v.decode("latin-1")
    return None


class GuardMiddleware:
    def __init__(self, app, loopback_only: bool, cors: list[str]) -> None:
        self.app, self.loopback_only = app, loopback_only
        self.allow_any_origin = "*" in cors
        self.origins = frozenset(o.rstrip("/").lower() for o in cors)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        host = _header(scope, b"host")
        if self.loopback_only and host is not None and not is_loopback_name(host_name(host)):
            return await send_json(send, 403, {"error": f"Host '{escape(host, 80)}' is not a loopback name: this "
                                   "server runs without a key on a loopback address and answers only localhost, "
                                   "127.0.0.1 or [::1] (DNS-rebinding protection); to serve other names, give an "
                                   "API key (--api-key-file)"})
        if scope["method"] in WRITES:
            origin = _header(scope, b"origin")
            if origin is not None and not self._origin_ok(origin, host, scope.get("scheme", "http")):
                return await send_json(send, 403, {"error": f"cross-origin request from '{escape(origin, 80)}' "
                                       "refused; allow that page's origin with --cors ORIGIN"})
        return await self.app(scope, receive, send)

    def _origin_ok(self, origin: str, host: str | None, scheme: str) -> bool:
        o = origin.strip().rstrip("/").lower()
        if self.allow_any_origin or o in self.origins:
            return True
        return host is not None and o == f"{scheme}://{host.strip().lower()}"

"""Settings of one `edgeproof serve` process, checked once here (the library boundary).

Defaults are safe like TorchServe's: loopback only, no key needed there; a non-loopback host needs an
API key unless the user says `insecure_no_auth` out loud. Sizes take `8M`/`512K`/`1G` forms.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

from edgeproof.errors import UsageError

log = logging.getLogger(__name__)
KEY_ENV = "EDGEPROOF_API_KEY"
MIN_KEY_CHARS = 16
KEY_HINT = ("generate one with: (umask 077; python3 -c 'import secrets; print(secrets.token_urlsafe(32))' > "
            "key.txt)")
DEFAULT_MAX_BODY = 8 * 2**20
DEFAULT_MAX_INFLIGHT = 256 * 2**20
MAX_IMAGES_PER_REQUEST = 64
_UNITS = {"": 1, "B": 1, "K": 2**10, "KB": 2**10, "KIB": 2**10, "M": 2**20, "MB": 2**20, "MIB": 2**20,
          "G": 2**30, "GB": 2**30, "GIB": 2**30}


def parse_bytes(text: str | int) -> int:
    """'8M' -> 8388608, '512K', '1G', '1000' (bytes); ValueError otherwise."""
    s = str(text).strip().upper().replace(" ", "")
    num = s.rstrip("KMGIB")
    unit = s[len(num):]
    if unit not in _UNITS or not num:
        raise ValueError(text)
    value = float(num) * _UNITS[unit]
    if not math.isfinite(value) or value < 1:
        raise ValueError(text)
    return int(value)


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or a name that resolves only to loopback addresses ('localhost')."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except (socket.gaierror, UnicodeError):
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0].split("%")[0]).is_loopback for i in infos)


def read_key(path: str | None) -> str | None:
    """The API key from --api-key-file, else $EDGEPROOF_API_KEY, else None. Never echoed in any message.

    The file must be a small regular file (user_files: /dev/zero or a FIFO is refused unread); one that others
    can read gets a warning naming the chmod that fixes it."""
    if path:
        from edgeproof.user_files import KEY, read_text

        p = Path(path)
        key = read_text(p, KEY, "--api-key-file").strip()
        where = f"--api-key-file '{p}'"
        _warn_if_shared(p)
    else:
        key = (os.environ.get(KEY_ENV) or "").strip()
        if not key:
            return None
        where = f"${KEY_ENV}"
    if len(key) < MIN_KEY_CHARS or any(c.isspace() for c in key) or not key.isprintable():
        raise UsageError(f"the API key in {where} is too weak or malformed (it needs {MIN_KEY_CHARS}+ printable "
                         f"characters without spaces); {KEY_HINT}")
    return key


def _warn_if_shared(p: Path) -> None:
    try:
        st = p.stat()
    except OSError:
        return
    if os.name == "posix" and st.st_mode & 0o077:
        log.warning("--api-key-file '%s' can be read by other users (mode %s); make it owner-only: chmod 600 %s",
                    p, oct(st.st_mode & 0o777)[2:], p)
    elif os.name == "posix" and hasattr(os, "getuid") and st.st_uid != os.getuid():
        log.warning("--api-key-file '%s' belongs to another user (uid %d)", p, st.st_uid)


@dataclass
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = field(default=None, repr=False)
    insecure_no_auth: bool = False
    max_body: int = DEFAULT_MAX_BODY
    max_batch: int = 8
    batch_timeout_ms: float = 0.0  # Triton's default too: batch what queued while the interpreter was busy
    workers: int = 1
    max_queue: int = 256  # images waiting for an interpreter; more -> 503 (back-pressure, flat memory)
    decode_threads: int = 2
    infer_timeout: float = 60.0  # seconds; 0 = no watchdog
    cors: list[str] = field(default_factory=list)
    top_k: int = 5
    name: str | None = None  # the OIP model name (default: from the file name)
    access_log: bool = False
    graceful_timeout: float = 30.0
    max_pixels: int | None = None  # images decoding to more pixels are refused (400); None: PIXELS_PER_INPUT x input
    header_timeout: float = 10.0  # seconds for a request head to arrive (408 after)
    body_timeout: float = 30.0  # seconds for a body to arrive once its head has
    max_connections: int = 1000  # open HTTP connections; over it, stale half-open ones are evicted, else 503
    max_header_bytes: int = 64 * 2**10  # request line + headers (431 over it)
    max_inflight: int = DEFAULT_MAX_INFLIGHT  # bytes of bodies and decoded pixels in flight (503 over it)
    grpc_port: int | None = None  # OIP v2 over gRPC on this port (same host); None: off
    max_models_loaded: int | None = None  # a model repository: at most this many loaded (LRU unloading)
    tls_cert: str | None = None  # PEM certificate (chain) for HTTPS and gRPC over TLS; with tls_key
    tls_key: str | None = None
    web_dir: str | None = None  # an 'edgeproof export web' folder, served at /web/ (public, like the page)

    def __post_init__(self) -> None:
        checks = (("--port", self.port, 0, 65535), ("--max-batch", self.max_batch, 1, 1024),
                  ("--workers", self.workers, 1, 64), ("--max-queue", self.max_queue, 1, 1_000_000),
                  ("--decode-threads", self.decode_threads, 1, 64), ("--top-k", self.top_k, 1, 100_000),
                  ("--max-connections", self.max_connections, 1, 1_000_000),
                  ("--grpc-port", 0 if self.grpc_port is None else self.grpc_port, 0, 65535),
                  ("--max-models-loaded", 1 if self.max_models_loaded is None else self.max_models_loaded, 1,
                   100_000))
        for flag, value, lo, hi in checks:
            if not isinstance(value, int) or not lo <= value <= hi:
                raise UsageError(f"{flag} must be an integer from {lo} to {hi}; got {value}")
        if not (0 <= self.batch_timeout_ms <= 10_000):  # also NaN
            raise UsageError(f"--batch-timeout-ms must be from 0 to 10000; got {self.batch_timeout_ms}")
        if not (0 <= self.infer_timeout < math.inf):
            raise UsageError(f"--infer-timeout must be seconds >= 0 (0 = no limit); got {self.infer_timeout}")
        for flag, seconds in (("--header-timeout", self.header_timeout), ("--body-timeout", self.body_timeout)):
            if not (0.1 <= seconds <= 3600):
                raise UsageError(f"{flag} must be seconds from 0.1 to 3600; got {seconds}")
        if self.max_inflight < self.max_body:
            raise UsageError(f"--max-inflight ({self.max_inflight} bytes) must be at least --max-body "
                             f"({self.max_body} bytes)")
        if self.max_body < 1024:
            raise UsageError(f"--max-body must be at least 1K; got {self.max_body} bytes")
        for origin in self.cors:
            if origin != "*" and not origin.startswith(("http://", "https://")):
                raise UsageError(f"--cors '{origin}' is not an origin; give e.g. https://app.example.com (or *)")
        if self.name is not None and not _name_ok(self.name):
            raise UsageError(f"--name '{self.name}' is not valid; use letters, digits, '.', '_' or '-'")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise UsageError("--tls-cert and --tls-key go together; give both PEM files (certificate and private key)")
        for flag, path in (("--tls-cert", self.tls_cert), ("--tls-key", self.tls_key)):
            if path is not None and not _regular(path):
                raise UsageError(f"{flag} '{path}' is not a readable regular file; give a PEM file (e.g. from "
                                 "'openssl req -x509 -newkey rsa:2048 -nodes -keyout key.pem -out cert.pem')")
        if not is_loopback(self.host) and self.api_key is None and not self.insecure_no_auth:
            raise UsageError(f"--host {self.host} is reachable from other machines and no API key is set; give "
                             f"--api-key-file FILE or ${KEY_ENV} ({KEY_HINT}), or pass --insecure-no-auth to serve "
                             "without authentication")

    @property
    def scheme(self) -> str:
        return "https" if self.tls_cert else "http"

    @property
    def auth(self) -> bool:
        return self.api_key is not None


def _regular(path: str) -> bool:
    from edgeproof.user_files import is_regular_file

    return is_regular_file(path) and os.access(path, os.R_OK)


def _name_ok(name: str) -> bool:
    return bool(name) and len(name) <= 128 and all(c.isalnum() or c in "._-" for c in name)


def model_name(path: Path) -> str:
    """An OIP-safe model name from a file name: 'model.tflite-int8.tflite' -> 'model.tflite-int8'."""
    stem = "".join(c if c.isalnum() or c in "._-" else "_" for c in path.stem)
    return stem[:128] or "model"

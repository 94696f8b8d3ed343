"""`edgeproof serve MODEL`: an HTTP inference API (classify, Open Inference Protocol v2, metrics, a phone page)."""

from __future__ import annotations

import argparse
import sys

from edgeproof.cli.contract_flags import add_contract_flags
from edgeproof.cli.trust_flag import add_trust_flag
from edgeproof.errors import UsageError
from edgeproof.formats import BACKENDS

EPILOG = """examples:
  edgeproof serve runs/demo/artifacts/model.tflite-int8.tflite
  curl -F image=@photo.jpg 'http://127.0.0.1:8000/v1/classify?top_k=3'
  edgeproof serve model.onnx --host 0.0.0.0 --api-key-file key.txt   # then open http://<device-ip>:8000/#key=...

endpoints:
  GET  /                      a page to choose or take a photo and see the top-k (phone-sized)
  POST /v1/classify           an image (raw body image/jpeg|png|..., or multipart; several files are batched)
  GET  /v1/model              the model card: labels, format, backend, placement, parity verdict
  GET  /v2, /v2/health/live, /v2/health/ready, /v2/models/NAME[/ready], POST /v2/models/NAME/infer
                              the Open Inference Protocol v2 (KServe / Triton / OpenVINO Model Server)
  GET  /metrics               Prometheus metrics
  gRPC (--grpc-port)          inference.GRPCInferenceService: the same protocol for tritonclient.grpc / KServe

security: binds 127.0.0.1 by default; another --host needs an API key (--api-key-file or $EDGEPROOF_API_KEY,
sent as 'Authorization: Bearer KEY') unless --insecure-no-auth. Make a key file only you can read with
  (umask 077; python3 -c 'import secrets; print(secrets.token_urlsafe(32))' > key.txt)
The page, /v2/health/* and /v2/models/NAME/ready are public. Keyless on loopback, only loopback Host names are
answered (DNS rebinding); cross-origin writes are refused unless --cors names the origin.
SIGTERM or SIGINT finishes in-flight requests and exits 0; a bad model or flag exits 2 before binding."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve a .tflite/.onnx model over HTTP (classify API, OIP v2, metrics, "
                                     "a phone page); no TensorFlow",
                       description="Serve a converted model over HTTP with dynamic batching (no TensorFlow).",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="the .tflite or .onnx file, or a model repository folder (NAME/VERSION/model.onnx, "
                                 "as Triton lays it out; every model served under its folder's name)")
    g = p.add_argument_group("network and security")
    g.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    g.add_argument("--port", type=int, default=8000, help="TCP port (default 8000; 0 = any free port)")
    g.add_argument("--api-key-file", metavar="F", help="file holding the API key clients send as a bearer token "
                                                       "(default: $EDGEPROOF_API_KEY)")
    g.add_argument("--insecure-no-auth", action="store_true",
                   help="allow a non-loopback --host without an API key (anyone on the network can use it)")
    g.add_argument("--cors", action="append", metavar="ORIGIN", default=[],
                   help="allow browser pages from ORIGIN to call the API (repeatable; default: CORS off)")
    g.add_argument("--max-body", default="8M", metavar="SIZE", help="largest request body, e.g. 8M (default); "
                                                                    "bigger is refused with 413")
    g.add_argument("--max-image-pixels", metavar="N", help="refuse images that decode to more than N pixels "
                   "with 400 (JPEGs count after reduced-size decoding), e.g. 40M (default: 256x the model's input "
                   "pixels, at least 4M; a header declaring over $EDGEPROOF_MAX_IMAGE_PIXELS or 100M is refused too)")
    g.add_argument("--max-inflight", default="256M", metavar="SIZE",
                   help="request bodies and decoded pixels held at once across all requests (default 256M); "
                        "more gets 503 with Retry-After")
    g.add_argument("--max-connections", type=int, default=1000, metavar="N",
                   help="open HTTP connections (default 1000); over it the oldest connection still sending its "
                        "headers is closed, else the newcomer gets 503")
    g.add_argument("--header-timeout", type=float, default=10.0, metavar="S",
                   help="seconds a client has to send its request head (default 10; 408 after)")
    g.add_argument("--body-timeout", type=float, default=30.0, metavar="S",
                   help="seconds a client has to send its body once the head arrived (default 30)")
    g.add_argument("--grpc-port", type=int, metavar="PORT",
                   help="also serve the Open Inference Protocol v2 over gRPC on PORT, on the same --host "
                        "(0 = any free port; needs 'edgeproof[serve-grpc]')")
    g.add_argument("--tls-cert", metavar="PEM", help="serve HTTPS (and gRPC over TLS) with this certificate; "
                                                     "needs --tls-key")
    g.add_argument("--tls-key", metavar="PEM", help="the private key of --tls-cert")
    g.add_argument("--access-log", action="store_true", help="log every request on stderr (control characters "
                                                             "escaped)")
    b = p.add_argument_group("batching and concurrency")
    b.add_argument("--max-batch", type=int, default=8, metavar="N",
                   help="coalesce concurrent requests into inference calls of up to N images (default 8; 1 = off; "
                        "models with a fixed batch size run one at a time)")
    b.add_argument("--batch-timeout-ms", type=float, default=0.0, metavar="T",
                   help="how long the first request of a batch may wait for more that are still being decoded "
                        "(default 0: batch what queued while the interpreter was busy; see benchmarks/RESULTS.md)")
    b.add_argument("--workers", type=int, default=1, metavar="N",
                   help="interpreter replicas in this server process: N copies of the model, each run by its own "
                        "thread (default 1); inference never runs concurrently on one interpreter. (train --workers: "
                        "training processes; run/parity --workers: Ray actors)")
    b.add_argument("--max-queue", type=int, default=256, metavar="N",
                   help="images waiting for an interpreter before new requests get 503 (default 256)")
    b.add_argument("--decode-threads", type=int, default=2, metavar="N",
                   help="threads that decode and check images off the event loop (default 2)")
    b.add_argument("--infer-timeout", type=float, default=60.0, metavar="S",
                   help="an inference call over S seconds fails with 503 and marks the server not ready "
                        "(default 60; 0 = no limit)")
    m = p.add_argument_group("model")
    m.add_argument("--web", metavar="SITE", help="also serve an 'edgeproof export web' folder at /web/ (the page "
                   "links it: run on this device)")
    m.add_argument("--name", help="model name in the OIP v2 API (default: from the file name; a repository uses "
                                  "its folder names)")
    m.add_argument("--max-models-loaded", type=int, metavar="N",
                   help="a model repository: keep at most N models loaded; loading another unloads the least "
                        "recently used (default: all)")
    m.add_argument("--top-k", type=int, default=5, metavar="K", help="labels per image when the request gives no "
                                                                     "top_k (default 5)")
    m.add_argument("--backend", choices=list(BACKENDS), metavar="BACKEND",
                   help=f"runtime to use: {', '.join(BACKENDS)} (default: from the file type/format)")
    m.add_argument("--threads", type=int, metavar="N", help="CPU threads per interpreter")
    m.add_argument("--device", metavar="PROFILE", help="device profile (see 'edgeproof devices')")
    m.add_argument("--delegate", action="append", metavar="LIB", help="TFLite delegate library (repeatable)")
    m.add_argument("--provider", action="append", metavar="EP", help="ONNX Runtime execution provider (repeatable)")
    m.add_argument("--allow-fallback", action="store_true",
                   help="if a delegate/execution provider fails, warn loudly and run on the CPU instead of failing")
    m.add_argument("--no-verify", action="store_true",
                   help="load the model even if it does not match the sha256 in the manifest.json beside it")
    add_trust_flag(m)
    add_contract_flags(p, "preprocessing overrides (for models without edgeproof metadata)")
    p.set_defaults(func=serve)


def config_from(args: argparse.Namespace):
    from edgeproof.cli.run import pixel_limit
    from edgeproof.serve.config import ServeConfig, parse_bytes, read_key

    try:
        max_body = parse_bytes(args.max_body)
    except ValueError:
        raise UsageError(f"--max-body '{args.max_body}' is not a size; give e.g. 8M, 512K or 1G") from None
    try:
        max_inflight = parse_bytes(args.max_inflight)
    except ValueError:
        raise UsageError(f"--max-inflight '{args.max_inflight}' is not a size; give e.g. 256M or 1G") from None
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be >= 1; got {args.threads}")
    return ServeConfig(host=args.host, port=args.port, api_key=read_key(args.api_key_file),
                       insecure_no_auth=args.insecure_no_auth, max_body=max_body, max_batch=args.max_batch,
                       batch_timeout_ms=args.batch_timeout_ms, workers=args.workers, max_queue=args.max_queue,
                       decode_threads=args.decode_threads, infer_timeout=args.infer_timeout, cors=list(args.cors),
                       top_k=args.top_k, name=args.name, access_log=args.access_log,
                       max_pixels=None if args.max_image_pixels is None else pixel_limit(args.max_image_pixels),
                       header_timeout=args.header_timeout, body_timeout=args.body_timeout,
                       max_connections=args.max_connections, max_inflight=max_inflight, grpc_port=args.grpc_port,
                       web_dir=_web_dir(args.web), max_models_loaded=args.max_models_loaded,
                       tls_cert=args.tls_cert, tls_key=args.tls_key)


def _web_dir(path: str | None) -> str | None:
    from pathlib import Path

    if path is not None and not (Path(path) / "models.json").is_file():
        raise UsageError(f"--web '{path}' is not an 'edgeproof export web' folder (no models.json); make one with "
                         "'edgeproof export web ARTIFACT... -o SITE'")
    return path


def _announce(started, config) -> None:
    m = started.model
    pl = m.placement or {}
    auth = "bearer key required" if config.auth else "no auth (loopback only)" if not config.insecure_no_auth \
        else "NO AUTH (--insecure-no-auth)"
    wait = f"within {config.batch_timeout_ms:g} ms" if config.batch_timeout_ms else "from what is queued"
    batching = (f"batches of up to {started.engine.max_batch} {wait}"
                if started.engine.max_batch > 1 else
                "no batching (the model has a fixed batch size)" if not started.engine.can_batch else "no batching")
    lan = f" (phone: {started.lan_url}/)" if started.lan_url else ""
    lan += f" and gRPC at {started.grpc_target}" if started.grpc_target else ""
    print(f"serving {m.path.name} as '{started.name}' at {started.url}/{lan}  [{m.format or 'no metadata'}; "
          f"{m.backend_name}; {pl.get('where', '?')}; {batching}; {len(started.engine.models)} worker(s); {auth}; "
          f"loaded in {started.load_s:.2f} s]", flush=True)
    if started.repository is not None:
        ready = sorted({r["name"] for r in started.repository if r["state"] == "READY"})
        names = sorted({r["name"] for r in started.repository})
        print(f"model repository: {len(names)} model(s), {len(ready)} loaded: {', '.join(ready)}", flush=True)
        for r in started.repository:
            if r["state"] != "READY" and r["reason"] not in ("not loaded",):
                print(f"  {r['name']} version {r['version']}: unavailable ({r['reason']})", flush=True)


def serve(args: argparse.Namespace) -> int:
    import logging
    import os

    from edgeproof.cli.load_flags import load_spec_from
    from edgeproof.serve.server import require_extra
    from edgeproof.serve.server import serve as run_server

    require_extra()
    config = config_from(args)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("edgeproof serve: %(levelname)s: %(message)s"))
    logger = logging.getLogger("edgeproof.serve")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # one line per record: not again by the CLI's console handler
    access = logging.getLogger("edgeproof.serve.access")  # one plain line per request (already escaped)
    access_handler = logging.StreamHandler(sys.stderr)
    access_handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    access.addHandler(access_handler)
    access.propagate = False
    started = run_server(load_spec_from(args), config, on_started=lambda s: _announce(s, config))
    hung = started.engine.hung > 0
    print(f"stopped serving {started.name}" + (" (an interpreter had hung; see the error above)" if hung else ""),
          file=sys.stderr, flush=True)
    if hung:  # a thread is still blocked inside native code: leave without waiting for it
        sys.stdout.flush()
        os._exit(0)
    return 0

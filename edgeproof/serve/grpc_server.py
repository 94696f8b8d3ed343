"""The Open Inference Protocol v2 over gRPC: `inference.GRPCInferenceService`, as Triton and KServe serve it.

The messages and service stubs are Triton's (`tritonclient.grpc.service_pb2`, the `edgeproof[serve-grpc]`
extra): the protocol's reference proto, wire-compatible with KServe's open_inference_grpc.proto, so
`tritonclient.grpc` and KServe's clients work unchanged. Served: ServerLive, ServerReady, ModelReady,
ServerMetadata, ModelMetadata and ModelInfer (inputs as `raw_input_contents` or typed contents, FP32,
BYTES, or a quantized model's native UINT8/INT8;
outputs always as `raw_output_contents`, as Triton answers). Everything else is UNIMPLEMENTED.

The same rules as HTTP: the key (metadata `authorization: Bearer KEY`) on everything but liveness and
readiness, the same request checks and errors (oip_codec), --max-body as the largest message, the
in-flight budget, the decode pool, the batcher. A request runs on a gRPC worker thread that hands the
work to the server's event loop and waits for it, so HTTP and gRPC requests batch together.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor

import edgeproof
from edgeproof.serve import oip_codec
from edgeproof.serve.limits import Busy
from edgeproof.serve.middleware import bearer_ok
from edgeproof.serve.service import HttpError, forget_traceback

log = logging.getLogger(__name__)
GRPC_WORKERS = 8


def require_grpc():
    from edgeproof.errors import require

    require("grpc", "serve-grpc", "edgeproof serve --grpc-port", package="grpcio")
    require("tritonclient.grpc", "serve-grpc", "edgeproof serve --grpc-port", package="tritonclient[grpc]")
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    return grpc, service_pb2, service_pb2_grpc


def request_dict(req) -> tuple[dict, bytes]:
    """A ModelInferRequest as the JSON request oip_codec checks, and its raw contents as the binary part."""
    raw = list(req.raw_input_contents)
    inputs = []
    for i, t in enumerate(req.inputs):
        d: dict = {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}
        if raw:
            d["parameters"] = {"binary_data_size": len(raw[i]) if i < len(raw) else -1}
        elif t.datatype == "BYTES":
            d["data"] = list(t.contents.bytes_contents)
        elif t.datatype in ("UINT8", "INT8"):  # the protocol carries them widened, in uint_/int_contents
            d["data"] = list(t.contents.uint_contents if t.datatype == "UINT8" else t.contents.int_contents)
        else:
            d["data"] = list(t.contents.fp32_contents)
        inputs.append(d)
    outputs = []
    for o in req.outputs:
        p = o.parameters.get("classification")
        outputs.append({"name": o.name, **({"parameters": {"classification": int(p.int64_param)}} if p else {})})
    body = {"inputs": inputs, **({"outputs": outputs} if outputs else {})}
    return body, raw[0] if raw else b""


def build_servicer(repo, loop: asyncio.AbstractEventLoop):
    grpc, pb, pb_grpc = require_grpc()
    codes = {400: grpc.StatusCode.INVALID_ARGUMENT, 401: grpc.StatusCode.UNAUTHENTICATED,
             404: grpc.StatusCode.NOT_FOUND, 413: grpc.StatusCode.RESOURCE_EXHAUSTED,
             503: grpc.StatusCode.UNAVAILABLE}
    cfg = repo.config
    digest = hashlib.sha256(cfg.api_key.encode()).digest() if cfg.api_key else None

    def guard(context, public: bool = False) -> None:
        if digest is None or public:
            return
        given = dict(context.invocation_metadata()).get("authorization")
        if not bearer_ok(given, digest):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "unauthorized")

    def on_loop(coro, timeout: float | None = None):
        """Run a coroutine on the server's event loop (where the batcher and the repository live); wait for it."""
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)

    def service(name: str, version: str):
        return on_loop(repo.service(name, version or None))

    def timed(endpoint: str):
        def wrap(fn):
            def call(self, request, context):
                t0, status = time.perf_counter(), "OK"
                try:
                    return fn(request, context)
                except HttpError as exc:
                    forget_traceback(exc)
                    status = codes.get(exc.status, grpc.StatusCode.INTERNAL).name
                    context.abort(codes.get(exc.status, grpc.StatusCode.INTERNAL), exc.message)
                except Exception:
                    status = (context.code() or grpc.StatusCode.UNKNOWN).name if hasattr(context, "code") else "ERROR"
                    raise
                finally:
                    repo.metrics.observe_request(endpoint, status, time.perf_counter() - t0)
            return call
        return wrap

    def infer(request, context):
        guard(context)
        svc = service(request.model_name, request.model_version)
        body, binary = request_dict(request)
        charge = 2 * request.ByteSize()
        try:
            repo.budget.take(charge, "this request")
        except Busy as exc:
            raise HttpError(503, str(exc)) from None
        try:
            parsed = oip_codec.from_request(body, binary, svc.model)
            parsed.outputs = [(k, True) for k, _ in parsed.outputs]
            res = on_loop(svc.classify(parsed.items) if parsed.items is not None else svc.infer(parsed.x))
        finally:
            repo.budget.give(charge)
        tensors, blobs = oip_codec.encode(parsed, svc.model, res.probs)
        out = pb.ModelInferResponse(model_name=svc.name, model_version=svc.version, id=request.id,
                                    raw_output_contents=blobs)
        for t in tensors:
            out.outputs.add(name=t["name"], datatype=t["datatype"], shape=t["shape"])
        return out

    def server_ready() -> bool:
        loaded = [svc for e in repo.loaded() for svc in e.services.values()]
        return bool(loaded) and all(svc.engine.ready for svc in loaded)

    class Servicer(pb_grpc.GRPCInferenceServiceServicer):
        ServerLive = timed("grpc_live")(lambda r, c: pb.ServerLiveResponse(live=True))
        ServerReady = timed("grpc_ready")(lambda r, c: pb.ServerReadyResponse(ready=server_ready()))

        @timed("grpc_model_ready")
        def ModelReady(request, context):  # noqa: N802 - the service's method names
            try:  # Triton: an unknown model is ready=false, not an error
                svc = repo.loaded_service(request.name, request.version or None)
            except HttpError:
                svc = None
            return pb.ModelReadyResponse(ready=svc is not None and svc.engine.ready)

        @timed("grpc_server")
        def ServerMetadata(request, context):  # noqa: N802
            guard(context)
            return pb.ServerMetadataResponse(name="edgeproof", version=edgeproof.__version__,
                                             extensions=["classification", "model_repository"])

        @timed("grpc_model_metadata")
        def ModelMetadata(request, context):  # noqa: N802
            guard(context)
            meta = service(request.name, request.version).metadata
            tensor = pb.ModelMetadataResponse.TensorMetadata
            return pb.ModelMetadataResponse(
                name=meta["name"], versions=meta["versions"], platform=meta["platform"],
                inputs=[tensor(name=t["name"], datatype=t["datatype"], shape=t["shape"]) for t in meta["inputs"]],
                outputs=[tensor(name=t["name"], datatype=t["datatype"], shape=t["shape"]) for t in meta["outputs"]])

        ModelInfer = timed("grpc_infer")(infer)

        @timed("grpc_repository_index")
        def RepositoryIndex(request, context):  # noqa: N802
            guard(context)
            entry = pb.RepositoryIndexResponse.ModelIndex
            return pb.RepositoryIndexResponse(models=[entry(**m) for m in repo.index()])

        @timed("grpc_repository_load")
        def RepositoryModelLoad(request, context):  # noqa: N802
            guard(context)
            on_loop(repo.load(request.model_name))
            return pb.RepositoryModelLoadResponse()

        @timed("grpc_repository_unload")
        def RepositoryModelUnload(request, context):  # noqa: N802
            guard(context)
            on_loop(repo.unload(request.model_name))
            return pb.RepositoryModelUnloadResponse()

    return Servicer()


class GrpcServer:
    """Bound at start-up (so a taken port is a clear error before serving), started with the event loop."""

    def __init__(self, repo, host: str, port: int) -> None:
        grpc, _, _ = require_grpc()
        cfg = repo.config
        self.repo = repo
        self.server = grpc.server(
            ThreadPoolExecutor(GRPC_WORKERS, thread_name_prefix="edgeproof-grpc"),
            maximum_concurrent_rpcs=cfg.max_queue,
            options=[("grpc.max_receive_message_length", cfg.max_body), ("grpc.so_reuseport", 0),
                     ("grpc.max_connection_idle_ms", 300_000), ("grpc.http2.max_ping_strikes", 3)])
        target = f"[{host.strip('[]')}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            if cfg.tls_cert:
                with open(cfg.tls_key, "rb") as k, open(cfg.tls_cert, "rb") as c:
                    creds = grpc.ssl_server_credentials([(k.read(), c.read())])
                self.port = self.server.add_secure_port(target, creds)
            else:
                self.port = self.server.add_insecure_port(target)
        except RuntimeError:
            self.port = 0
        if not self.port:
            from edgeproof.errors import UsageError

            raise UsageError(f"cannot listen for gRPC on {target} (in use?); pick another --grpc-port (0 = any free "
                             "port)")

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        _, _, pb_grpc = require_grpc()
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(build_servicer(self.repo, loop), self.server)
        self.server.start()

    def stop(self, grace: float) -> None:
        self.server.stop(grace).wait(grace + 1)

"""The Open Inference Protocol v2 over gRPC: `inference.GRPCInferenceService`, as Triton and KServe serve it.

The messages and service stubs are Triton's (`tritonclient.grpc.service_pb2`, the `edgeproof[serve-grpc]`
extra): the protocol's reference proto, wire-compatible with KServe's open_inference_grpc.proto, so
`tritonclient.grpc` and KServe's clients work unchanged. Served: ServerLive, ServerReady, ModelReady,
ServerMetadata, ModelMetadata and ModelInfer (inputs as `raw_input_contents` or typed contents;
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
from edgeproof.serve import oip, oip_codec
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
        else:
            d["data"] = list(t.contents.fp32_contents)
        inputs.append(d)
    outputs = []
    for o in req.outputs:
        p = o.parameters.get("classification")
        outputs.append({"name": o.name, **({"parameters": {"classification": int(p.int64_param)}} if p else {})})
    body = {"inputs": inputs, **({"outputs": outputs} if outputs else {})}
    return body, raw[0] if raw else b""


def build_servicer(svc, loop: asyncio.AbstractEventLoop):
    grpc, pb, pb_grpc = require_grpc()
    codes = {400: grpc.StatusCode.INVALID_ARGUMENT, 401: grpc.StatusCode.UNAUTHENTICATED,
             404: grpc.StatusCode.NOT_FOUND, 413: grpc.StatusCode.RESOURCE_EXHAUSTED,
             503: grpc.StatusCode.UNAVAILABLE}
    model, name = svc.model, svc.name
    digest = hashlib.sha256(svc.config.api_key.encode()).digest() if svc.config.api_key else None
    meta = oip.metadata(model, name)

    def guard(context, public: bool = False) -> None:
        if digest is None or public:
            return
        given = dict(context.invocation_metadata()).get("authorization")
        if not bearer_ok(given, digest):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "unauthorized")

    def check_model(context, asked: str, version: str) -> None:
        if asked != name:
            context.abort(grpc.StatusCode.NOT_FOUND, f"model '{asked[:80]}' not found; this server serves '{name}'")
        if version not in ("", "1"):
            context.abort(grpc.StatusCode.NOT_FOUND, f"model '{name}' has no version '{version[:20]}'; its only "
                                                     "version is '1'")

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
                    svc.metrics.observe_request(endpoint, status, time.perf_counter() - t0)
            return call
        return wrap

    def ready() -> bool:
        return svc.engine.ready

    def infer(request, context):
        guard(context)
        check_model(context, request.model_name, request.model_version)
        body, binary = request_dict(request)
        charge = 2 * request.ByteSize()
        try:
            svc.budget.take(charge, "this request")
        except Busy as exc:
            raise HttpError(503, str(exc)) from None
        try:
            parsed = oip_codec.from_request(body, binary, model)
            parsed.outputs = [(k, True) for k, _ in parsed.outputs]
            coro = svc.classify(parsed.items) if parsed.items is not None else svc.infer(parsed.x)
            res = asyncio.run_coroutine_threadsafe(coro, loop).result()
        finally:
            svc.budget.give(charge)
        tensors, blobs = oip_codec.encode(parsed, model, res.probs)
        out = pb.ModelInferResponse(model_name=name, model_version="1", id=request.id, raw_output_contents=blobs)
        for t in tensors:
            out.outputs.add(name=t["name"], datatype=t["datatype"], shape=t["shape"])
        return out

    class Servicer(pb_grpc.GRPCInferenceServiceServicer):
        ServerLive = timed("grpc_live")(lambda r, c: pb.ServerLiveResponse(live=True))
        ServerReady = timed("grpc_ready")(lambda r, c: pb.ServerReadyResponse(ready=ready()))

        @timed("grpc_model_ready")
        def ModelReady(request, context):  # noqa: N802 - the service's method names
            known = request.name == name and request.version in ("", "1")  # Triton: unknown is ready=false
            return pb.ModelReadyResponse(ready=known and ready())

        @timed("grpc_server")
        def ServerMetadata(request, context):  # noqa: N802
            guard(context)
            return pb.ServerMetadataResponse(name="edgeproof", version=edgeproof.__version__,
                                             extensions=["classification"])

        @timed("grpc_model_metadata")
        def ModelMetadata(request, context):  # noqa: N802
            guard(context)
            check_model(context, request.name, request.version)
            tensor = pb.ModelMetadataResponse.TensorMetadata
            return pb.ModelMetadataResponse(
                name=name, versions=meta["versions"], platform=meta["platform"],
                inputs=[tensor(name=t["name"], datatype=t["datatype"], shape=t["shape"]) for t in meta["inputs"]],
                outputs=[tensor(name=t["name"], datatype=t["datatype"], shape=t["shape"]) for t in meta["outputs"]])

        ModelInfer = timed("grpc_infer")(infer)

    return Servicer()


class GrpcServer:
    """Bound at start-up (so a taken port is a clear error before serving), started with the event loop."""

    def __init__(self, svc, host: str, port: int) -> None:
        grpc, _, _ = require_grpc()
        cfg = svc.config
        self.svc = svc
        self.server = grpc.server(
            ThreadPoolExecutor(GRPC_WORKERS, thread_name_prefix="edgeproof-grpc"),
            maximum_concurrent_rpcs=cfg.max_queue,
            options=[("grpc.max_receive_message_length", cfg.max_body), ("grpc.so_reuseport", 0),
                     ("grpc.max_connection_idle_ms", 300_000), ("grpc.http2.max_ping_strikes", 3)])
        target = f"[{host.strip('[]')}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            self.port = self.server.add_insecure_port(target)
        except RuntimeError:
            self.port = 0
        if not self.port:
            from edgeproof.errors import UsageError

            raise UsageError(f"cannot listen for gRPC on {target} (in use?); pick another --grpc-port (0 = any free "
                             "port)")

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        _, _, pb_grpc = require_grpc()
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(build_servicer(self.svc, loop), self.server)
        self.server.start()

    def stop(self, grace: float) -> None:
        self.server.stop(grace).wait(grace + 1)

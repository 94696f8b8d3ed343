"""The Open Inference Protocol v2 over REST (KServe, Triton, OpenVINO Model Server): the routes.

The model's input is offered in model-input space: FP32 [-1, H, W, 3] NHWC after the artifact's
own preprocessing (quantization and NCHW layout are applied by the runtime, as in Model.predict).
An input of datatype BYTES carries encoded images instead (base64 text in JSON), shape [N] or [N, 1],
decoded and preprocessed exactly like /v1/classify. The output is FP32 [N, C] probabilities; an
output requested with `"parameters": {"classification": K}` is Triton's classification extension:
BYTES [N, K] strings "score:index:label". Bodies may use Triton's binary tensor data extension
(oip_codec), so tritonclient works with its defaults; `GET .../config` answers like Triton's model
configuration (max_batch_size, NHWC format) for Triton's image_client.
"""

from __future__ import annotations

import asyncio
import json

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import edgeproof
from edgeproof.serve import oip_codec
from edgeproof.serve.service import HttpError

EXTENSIONS = ["classification", "binary_tensor_data", "model_configuration"]


def _platform(model) -> str:
    family = "tflite" if model.path.suffix.lower() == ".tflite" else "onnx"
    return f"{family}_{model.backend_name}"


def metadata(model, name: str) -> dict:
    pp = model.preprocess
    return {"name": name, "versions": ["1"], "platform": _platform(model),
            "inputs": [{"name": model.input_spec.name, "datatype": "FP32", "shape": [-1, pp.height, pp.width, 3]}],
            "outputs": [{"name": model.output_spec.name, "datatype": "FP32", "shape": [-1, len(model.labels)]}],
            "parameters": {"labels": list(model.labels), "format": model.format,
                           "bytes_input": "an input of datatype BYTES, shape [N], carries N encoded images "
                                          "(base64 in JSON, or binary tensor data)"}}


def config(model, name: str, max_batch: int, delay_ms: float) -> dict:
    """Triton's model configuration, as far as it applies (tritonclient's get_model_config, image_client)."""
    pp = model.preprocess
    return {"name": name, "platform": _platform(model), "backend": model.backend_name, "max_batch_size": max_batch,
            "input": [{"name": model.input_spec.name, "data_type": "TYPE_FP32", "format": "FORMAT_NHWC",
                       "dims": [pp.height, pp.width, 3]}],
            "output": [{"name": model.output_spec.name, "data_type": "TYPE_FP32", "dims": [len(model.labels)],
                        "label_filename": ""}],
            **({"dynamic_batching": {"max_queue_delay_microseconds": int(delay_ms * 1000)}} if max_batch > 1 else {})}


def routes(svc) -> list[Route]:
    model, name = svc.model, svc.name

    def check_name(request: Request) -> None:
        asked = request.path_params["name"]
        version = request.path_params.get("version")
        if asked != name:
            raise HttpError(404, f"model '{asked[:80]}' not found; this server serves '{name}'")
        if version not in (None, "", "1"):
            raise HttpError(404, f"model '{name}' has no version '{version[:20]}'; its only version is '1'")

    async def server_meta(request: Request) -> JSONResponse:
        return JSONResponse({"name": "edgeproof", "version": edgeproof.__version__, "extensions": EXTENSIONS})

    async def live(request: Request) -> JSONResponse:
        return JSONResponse({"live": True})

    async def ready(request: Request) -> JSONResponse:
        if not svc.engine.ready:
            return JSONResponse({"ready": False, "error": svc.engine.not_ready_reason}, status_code=503)
        return JSONResponse({"ready": True})

    async def model_meta(request: Request) -> JSONResponse:
        check_name(request)
        return JSONResponse(svc.metadata)

    async def model_ready(request: Request) -> JSONResponse:
        check_name(request)
        if not svc.engine.ready:
            return JSONResponse({"name": name, "ready": False, "error": svc.engine.not_ready_reason}, status_code=503)
        return JSONResponse({"name": name, "ready": True})

    async def model_config(request: Request) -> JSONResponse:
        check_name(request)
        return JSONResponse(config(model, name, svc.engine.max_batch, svc.config.batch_timeout_ms))

    async def infer(request: Request) -> Response:
        check_name(request)
        raw = await request.body()
        loop = asyncio.get_running_loop()
        parsed = await loop.run_in_executor(svc.pool, oip_codec.parse, raw, request.headers.get(oip_codec.HEADER),
                                            model)
        res = await (svc.classify(parsed.items) if parsed.items is not None else svc.infer(parsed.x))
        tensors, blobs = oip_codec.encode(parsed, model, res.probs)
        body = {"model_name": name, "model_version": "1", "outputs": tensors}
        if "id" in parsed.req:
            body["id"] = parsed.req["id"]
        if not blobs:
            return JSONResponse(body)
        head = json.dumps(body).encode()
        return Response(b"".join([head, *blobs]), media_type="application/octet-stream",
                        headers={"inference-header-content-length": str(len(head))})

    svc.metadata = metadata(model, name)
    r = []
    for base in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        r += [Route(base, model_meta, methods=["GET"]), Route(base + "/ready", model_ready, methods=["GET"]),
              Route(base + "/config", model_config, methods=["GET"]), Route(base + "/infer", infer, methods=["POST"])]
    return [Route("/v2", server_meta, methods=["GET"]), Route("/v2/health/live", live, methods=["GET"]),
            Route("/v2/health/ready", ready, methods=["GET"]), *r]

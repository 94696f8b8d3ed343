"""The Open Inference Protocol v2 over REST (KServe, Triton, OpenVINO Model Server): the routes.

The model's input is offered in model-input space: FP32 [-1, H, W, C] NHWC after the artifact's
own preprocessing (quantization and NCHW layout are applied by the runtime, as in Model.predict).
A quantized model (int8/uint8 input with a scale) also takes its native UINT8/INT8 [-1, H, W, C], passed
to the interpreter as is; its metadata and config name that native datatype (FP32 is still accepted).
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

EXTENSIONS = ["classification", "binary_tensor_data", "model_configuration", "model_repository",
              "statistics"]


def _platform(model) -> str:
    family = "tflite" if model.path.suffix.lower() == ".tflite" else "onnx"
    return f"{family}_{model.backend_name}"


def metadata(model, name: str, versions: list[str] | None = None) -> dict:
    pp = model.preprocess
    native = oip_codec.native_datatype(model)
    return {"name": name, "versions": versions or ["1"], "platform": _platform(model),
            "inputs": [{"name": model.input_spec.name, "datatype": native or "FP32",
                        "shape": [-1, pp.height, pp.width, pp.channels]}],
            "outputs": [{"name": model.output_spec.name, "datatype": "FP32", "shape": [-1, len(model.labels)]}],
            "parameters": {"labels": list(model.labels), "format": model.format,
                           "input_datatypes": [*([native] if native else []), "FP32", "BYTES"],
                           **({"input_quantization": {"datatype": native, "scale": float(model.input_spec.scale),
                                                      "zero_point": int(model.input_spec.zero_point or 0)}}
                              if native else {}),
                           "bytes_input": "an input of datatype BYTES, shape [N], carries N encoded images "
                                          "(base64 in JSON, or binary tensor data)"}}


def config(model, name: str, max_batch: int, delay_ms: float) -> dict:
    """Triton's model configuration, as far as it applies (tritonclient's get_model_config, image_client)."""
    pp = model.preprocess
    return {"name": name, "platform": _platform(model), "backend": model.backend_name, "max_batch_size": max_batch,
            "input": [{"name": model.input_spec.name, "data_type": f"TYPE_{oip_codec.native_datatype(model) or 'FP32'}",
                       "format": "FORMAT_NHWC",
                       "dims": [pp.height, pp.width, pp.channels]}],
            "output": [{"name": model.output_spec.name, "data_type": "TYPE_FP32", "dims": [len(model.labels)],
                        "label_filename": ""}],
            **({"dynamic_batching": {"max_queue_delay_microseconds": int(delay_ms * 1000)}} if max_batch > 1 else {})}


def routes(repo) -> list[Route]:
    async def service(request: Request):
        return await repo.service(request.path_params["name"], request.path_params.get("version"))

    async def server_meta(request: Request) -> JSONResponse:
        return JSONResponse({"name": "edgeproof", "version": edgeproof.__version__, "extensions": EXTENSIONS})

    async def live(request: Request) -> JSONResponse:
        return JSONResponse({"live": True})

    async def ready(request: Request) -> JSONResponse:
        loaded = [svc for e in repo.loaded() for svc in e.services.values()]
        sick = [f"{svc.name}: {svc.engine.not_ready_reason}" for svc in loaded if not svc.engine.ready]
        if sick or not loaded:
            return JSONResponse({"ready": False, "error": "; ".join(sick) or "no model is loaded"}, status_code=503)
        return JSONResponse({"ready": True})

    async def model_meta(request: Request) -> JSONResponse:
        return JSONResponse((await service(request)).metadata)

    async def model_ready(request: Request) -> JSONResponse:
        name = request.path_params["name"]
        svc = repo.loaded_service(name, request.path_params.get("version"))
        if svc is None or not svc.engine.ready:
            why = "not loaded" if svc is None else svc.engine.not_ready_reason
            return JSONResponse({"name": name, "ready": False, "error": why}, status_code=503)
        return JSONResponse({"name": name, "ready": True})

    async def model_config(request: Request) -> JSONResponse:
        svc = await service(request)
        return JSONResponse(config(svc.model, svc.name, svc.engine.max_batch, svc.config.batch_timeout_ms))

    async def infer(request: Request) -> Response:
        svc = await service(request)
        raw = await request.body()
        loop = asyncio.get_running_loop()
        parsed = await loop.run_in_executor(svc.pool, oip_codec.parse, raw, request.headers.get(oip_codec.HEADER),
                                            svc.model)
        res = await (svc.classify(parsed.items) if parsed.items is not None else svc.infer(parsed.x))
        tensors, blobs = oip_codec.encode(parsed, svc.model, res.probs)
        body = {"model_name": svc.name, "model_version": svc.version, "outputs": tensors}
        if "id" in parsed.req:
            body["id"] = parsed.req["id"]
        if not blobs:
            return JSONResponse(body)
        head = json.dumps(body).encode()
        return Response(b"".join([head, *blobs]), media_type="application/octet-stream",
                        headers={"inference-header-content-length": str(len(head))})

    async def stats(request: Request) -> JSONResponse:
        svc = await service(request)
        return JSONResponse({"model_stats": [svc.metrics.stats()]})

    async def index(request: Request) -> JSONResponse:
        return JSONResponse(repo.index())

    async def load(request: Request) -> JSONResponse:
        await repo.load(request.path_params["name"])
        return JSONResponse({})

    async def unload(request: Request) -> JSONResponse:
        await repo.unload(request.path_params["name"])
        return JSONResponse({})

    r = []
    for base in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        r += [Route(base, model_meta, methods=["GET"]), Route(base + "/ready", model_ready, methods=["GET"]),
              Route(base + "/config", model_config, methods=["GET"]), Route(base + "/infer", infer, methods=["POST"]),
              Route(base + "/stats", stats, methods=["GET"])]
    return [Route("/v2", server_meta, methods=["GET"]), Route("/v2/health/live", live, methods=["GET"]),
            Route("/v2/health/ready", ready, methods=["GET"]), *r,
            Route("/v2/repository/index", index, methods=["POST"]),
            Route("/v2/repository/models/{name}/load", load, methods=["POST"]),
            Route("/v2/repository/models/{name}/unload", unload, methods=["POST"])]

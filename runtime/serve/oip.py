"""The Open Inference Protocol v2 over REST (KServe, Triton, OpenVINO Model Server), JSON encoding.

The model's input is offered in model-input space: FP32 [-1, H, W, 3] NHWC after the artifact's
own preprocessing (quantization and NCHW layout are applied by the runtime, as in Model.predict).
An input of datatype BYTES carries encoded images instead (base64 text in JSON), shape [N] or [N, 1],
decoded and preprocessed exactly like /v1/classify. The output is FP32 [N, C] probabilities; an
output requested with `"parameters": {"classification": K}` is Triton's classification extension:
BYTES [N, K] strings "score:index:label".
"""

from __future__ import annotations

import asyncio
import json
import math

import numpy as np
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import edgeproof
from edgeproof.runtime.serve.config import MAX_IMAGES_PER_REQUEST
from edgeproof.runtime.serve.images import BadImage, _prepare_all, b64_image
from edgeproof.runtime.serve.service import HttpError

EXTENSIONS = ["classification"]


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
                                          "(base64 in JSON)"}}


def _expected(model) -> str:
    pp = model.preprocess
    return (f"'{model.input_spec.name}' as FP32 [N, {pp.height}, {pp.width}, 3] (model-input space) or as "
            "BYTES [N] (encoded images, base64)")


def parse_request(raw: bytes, model) -> tuple[dict, np.ndarray | None, list[tuple[str, bytes]] | None]:
    """(request, FP32 batch or None, encoded images or None); HttpError(400) naming what is expected.

    Runs in the decode pool: a big JSON tensor is seconds of parsing on a Pi, never on the event loop."""
    try:
        req = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise HttpError(400, f"request body is not JSON ({str(exc)[:80]}); send an OIP v2 inference request "
                             '{"inputs": [{"name", "shape", "datatype", "data"}]}') from None
    inputs = req.get("inputs") if isinstance(req, dict) else None
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise HttpError(400, f"an inference request needs \"inputs\" with exactly one tensor: {_expected(model)}")
    requested_outputs(req, model)
    inp = inputs[0]
    name, dtype, shape, data = inp.get("name"), inp.get("datatype"), inp.get("shape"), inp.get("data")
    if name != model.input_spec.name:
        raise HttpError(400, f"unknown input '{str(name)[:80]}'; this model takes {_expected(model)}")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise HttpError(400, f"input '{name}' needs \"shape\" as a list of integers; expected {_expected(model)}")
    if not isinstance(data, list):
        raise HttpError(400, f"input '{name}' needs \"data\" as a JSON array (binary tensor data is not supported)")
    if dtype == "BYTES":
        if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)) or not 1 <= shape[0] <= MAX_IMAGES_PER_REQUEST:
            raise HttpError(400, f"BYTES input '{name}' has shape {shape}; expected [N] or [N, 1] with 1 <= N <= "
                                 f"{MAX_IMAGES_PER_REQUEST} encoded images")
        flat = data if not data or not isinstance(data[0], list) else [v for row in data for v in row]
        if len(flat) != shape[0]:
            raise HttpError(400, f"BYTES input '{name}' has shape {shape} but {len(flat)} element(s) in \"data\"")
        try:
            return req, None, [(f"element {i}", b64_image(v, i)) for i, v in enumerate(flat)]
        except BadImage as exc:
            raise HttpError(400, f"input '{name}' {exc}") from None
    pp = model.preprocess
    want = [pp.height, pp.width, 3]
    if dtype != "FP32" or len(shape) != 4 or shape[1:] != want or not 1 <= shape[0] <= MAX_IMAGES_PER_REQUEST:
        raise HttpError(400, f"input '{name}' is {dtype} {shape}; expected {_expected(model)} "
                             f"with 1 <= N <= {MAX_IMAGES_PER_REQUEST}")
    try:
        x = np.asarray(data, dtype=np.float32)
    except (ValueError, TypeError):
        raise HttpError(400, f"input '{name}' data is not an array of numbers (FP32 {shape})") from None
    if x.size != math.prod(shape):
        raise HttpError(400, f"input '{name}' has shape {shape} ({math.prod(shape)} values) but \"data\" holds "
                             f"{x.size}")
    x = x.reshape(shape)
    if not np.isfinite(x).all():
        raise HttpError(400, f"input '{name}' holds NaN or infinite values; send finite FP32 values")
    return req, x, None


def requested_outputs(req: dict, model) -> list[int | None]:
    """Per requested output: None for the FP32 probabilities, K for classification; checked before inference."""
    out_name = model.output_spec.name
    asked = req.get("outputs")
    if asked is None:
        return [None]
    if not isinstance(asked, list) or not all(isinstance(o, dict) for o in asked):
        raise HttpError(400, f"\"outputs\" must be a list of {{\"name\": ...}}; this model has output '{out_name}'")
    ks = []
    for o in asked:
        if o.get("name") != out_name:
            raise HttpError(400, f"unknown output '{str(o.get('name'))[:80]}'; this model's output is '{out_name}'")
        params = o.get("parameters") if isinstance(o.get("parameters"), dict) else {}
        k = params.get("classification")
        if k is not None and (not isinstance(k, int) or isinstance(k, bool) or k < 1):
            raise HttpError(400, f"output '{out_name}' parameter classification must be an integer >= 1; got {k}")
        ks.append(k)
    return ks


def outputs(ks: list[int | None], model, probs: np.ndarray) -> list[dict]:
    out_name, result = model.output_spec.name, []
    for k in ks:
        if k is None:
            result.append({"name": out_name, "datatype": "FP32", "shape": list(probs.shape),
                           "data": probs.ravel().tolist()})
            continue
        k = min(k, probs.shape[1])
        idx = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        data = [f"{row[i]:f}:{int(i)}:{model.label(int(i))}" for row, ids in zip(probs, idx) for i in ids]
        result.append({"name": out_name, "datatype": "BYTES", "shape": [len(probs), k], "data": data})
    return result


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

    async def infer(request: Request) -> JSONResponse:
        check_name(request)
        raw = await request.body()
        loop = asyncio.get_running_loop()
        req, x, items = await loop.run_in_executor(svc.pool, parse_request, raw, model)
        if items is not None:
            x = await svc.decode(loop.run_in_executor(svc.pool, _prepare_all, items, model.preprocess))
        res = await svc.infer(x)
        body = {"model_name": name, "model_version": "1", "outputs": outputs(requested_outputs(req, model), model, res.probs)}
        if "id" in req:
            body["id"] = req["id"]
        return JSONResponse(body)

    svc.metadata = metadata(model, name)
    r = []
    for base in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        r += [Route(base, model_meta, methods=["GET"]), Route(base + "/ready", model_ready, methods=["GET"]),
              Route(base + "/infer", infer, methods=["POST"])]
    return [Route("/v2", server_meta, methods=["GET"]), Route("/v2/health/live", live, methods=["GET"]),
            Route("/v2/health/ready", ready, methods=["GET"]), *r]

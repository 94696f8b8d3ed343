"""KServe's V1 protocol (`/v1/models/NAME:predict`), for clients that speak only it.

`{"instances": [...]}` where each instance is an image in model-input space (a nested [H][W][3] list of
numbers, as in OIP FP32 data) or KServe's binary convention `{"b64": "<base64 of a JPEG/PNG>"}` (decoded
like /v1/classify). The answer is `{"predictions": [[p_0, ..., p_C-1], ...]}`: the class probabilities,
one row per instance. `GET /v1/models/NAME` is `{"name", "ready"}`.
"""

from __future__ import annotations

import json

import numpy as np
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from edgeproof.serve import oip_codec
from edgeproof.serve.config import MAX_IMAGES_PER_REQUEST
from edgeproof.serve.images import BadImage, b64_image
from edgeproof.serve.service import HttpError


def _instances(raw: bytes) -> list:
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        body = None
    inst = body.get("instances") if isinstance(body, dict) else None
    if not isinstance(inst, list) or not 1 <= len(inst) <= MAX_IMAGES_PER_REQUEST:
        raise HttpError(400, f'a V1 predict request is {{"instances": [...]}} with 1 to {MAX_IMAGES_PER_REQUEST} '
                             'images: each a [H][W][3] array in model-input space, or {"b64": "<JPEG/PNG>"}')
    return inst


def routes(repo) -> list[Route]:
    async def predict(request: Request) -> JSONResponse:
        svc = await repo.service(request.path_params["name"])
        inst = _instances(await request.body())
        if all(isinstance(i, dict) and "b64" in i for i in inst):
            try:
                items = [(f"instance {n}", b64_image(i["b64"], n)) for n, i in enumerate(inst)]
            except BadImage as exc:
                raise HttpError(400, str(exc)) from None
            res = await svc.classify(items)
        else:
            pp = svc.model.preprocess
            req = {"inputs": [{"name": svc.model.input_spec.name, "datatype": "FP32",
                               "shape": [len(inst), pp.height, pp.width, 3], "data": inst}]}
            res = await svc.infer(oip_codec.from_request(req, b"", svc.model, maybe_bool=True).x)
        return JSONResponse({"predictions": np.asarray(res.probs, np.float64).tolist()})

    async def status(request: Request) -> JSONResponse:
        svc = repo.loaded_service(request.path_params["name"])
        return JSONResponse({"name": request.path_params["name"], "ready": bool(svc and svc.engine.ready)})

    return [Route("/v1/models/{name}:predict", predict, methods=["POST"]),
            Route("/v1/models/{name}", status, methods=["GET"])]

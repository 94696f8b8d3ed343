"""`POST /v1/classify` (one image as a raw body or multipart, or several batched together) and `GET /v1/model`."""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from edgeproof.serve.config import MAX_IMAGES_PER_REQUEST
from edgeproof.serve.images import ACCEPTED, RAW_TYPES, media_type


def parse_top_k(request: Request, default: int, n_classes: int) -> int:
    from edgeproof.serve.service import HttpError

    raw = request.query_params.get("top_k", request.query_params.get("k"))
    if raw is None:
        return min(default, n_classes)
    try:
        k = int(raw)
    except ValueError:
        k = 0
    if k < 1:
        raise HttpError(400, f"top_k '{raw[:40]}' is not valid; give an integer >= 1 (this model has "
                             f"{n_classes} classes)")
    return min(k, n_classes)


async def read_images(request: Request) -> list[tuple[str, bytes]]:
    """[(what to call it in an error, bytes)] from a multipart form or a raw image body; 415 otherwise."""
    from edgeproof.serve.service import HttpError

    ctype = media_type(request.headers.get("content-type"))
    if ctype == "multipart/form-data":
        async with request.form(max_files=MAX_IMAGES_PER_REQUEST, max_fields=MAX_IMAGES_PER_REQUEST) as form:
            items = []
            for key, value in form.multi_items():
                if not isinstance(value, str):  # an UploadFile
                    items.append((f"image {len(items) + 1} ('{(value.filename or key)[:80]}')", await value.read()))
        if not items:
            raise HttpError(400, "the multipart form has no file part; send the image as a file, e.g. "
                                 "curl -F image=@photo.jpg URL/v1/classify")
        return items
    if ctype.startswith(RAW_TYPES):
        return [("image", await request.body())]
    shown = ctype or "none"
    raise HttpError(415, f"Content-Type '{shown[:60]}' is not accepted here; send {ACCEPTED}")


def routes(repo) -> list[Route]:
    async def service(request: Request):
        """?model=NAME (&version=V); without it the only model, or the first by name in a repository."""
        return await repo.service(request.query_params.get("model"), request.query_params.get("version"))

    async def classify(request: Request) -> JSONResponse:
        t0 = time.perf_counter()
        svc = await service(request)
        model = svc.model
        top_k = parse_top_k(request, svc.config.top_k, len(model.labels) or 1)
        items = await read_images(request)
        res = await svc.classify(items)
        tops = model.topk(res.probs, top_k)
        rows = [[{"label": lb, "score": round(s, 6)} for lb, s in row] for row in tops]
        body = {"model": svc.model_ref,
                "latency_ms": round((time.perf_counter() - t0) * 1000, 3),
                "inference_ms": round(res.infer_s * 1000, 3), "queue_ms": round(res.queue_s * 1000, 3),
                "batch_size": res.batch_size}
        if len(rows) == 1:
            body["top_k"] = rows[0]
        else:
            body["results"] = [{"image": which, "top_k": row} for (which, _), row in zip(items, rows)]
        return JSONResponse(body)

    async def card(request: Request) -> JSONResponse:
        svc = await service(request)
        return JSONResponse({**svc.card, "ready": svc.engine.ready, "not_ready_reason": svc.engine.not_ready_reason})

    return [Route("/v1/classify", classify, methods=["POST"]), Route("/v1/model", card, methods=["GET"])]

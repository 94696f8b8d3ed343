"""The Starlette app: routes, the page from the package, metrics, JSON errors, middleware order.

Layers, outermost first: metrics + security headers + access log, host and origin guards, CORS
(only with --cors), bearer auth (only with a key), body limit and in-flight budget, then Starlette's
router. The page, the health probes and model readiness are public; the page asks for the key and
sends it as a bearer token. Header size, read deadlines and the connection cap live one level down,
in the HTTP protocol (protocol.py).
"""

from __future__ import annotations

from importlib import resources

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from edgeproof.serve import classify, kserve_v1, oip
from edgeproof.serve.config import is_loopback
from edgeproof.serve.guards import GuardMiddleware
from edgeproof.serve.middleware import AuthMiddleware, BodyLimitMiddleware, MetricsMiddleware
from edgeproof.serve.service import HttpError, forget_traceback

STATIC = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}
PAGE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
            "connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'")


def _static_files() -> dict[str, bytes]:
    root = resources.files("edgeproof.serve") / "static"
    return {name: (root / name).read_bytes() for name in ("index.html", *STATIC)}


def page_routes(repo) -> list[Route]:
    files = _static_files()

    async def page(request: Request) -> Response:
        return Response(files["index.html"], media_type="text/html; charset=utf-8",
                        headers={"content-security-policy": PAGE_CSP, "cache-control": "no-cache"})

    def static(name: str):
        async def serve_file(request: Request) -> Response:
            return Response(files[name], media_type=STATIC[name], headers={"cache-control": "no-cache"})
        return serve_file

    async def metrics(request: Request) -> Response:
        body, ctype = repo.metrics.exposition()
        return Response(body, media_type=ctype)

    return [Route("/", page, methods=["GET"]), Route("/index.html", page, methods=["GET"]),
            *(Route(f"/static/{n}", static(n), methods=["GET"]) for n in STATIC),
            Route("/metrics", metrics, methods=["GET"])]


async def _http_error(request: Request, exc: HttpError) -> JSONResponse:
    forget_traceback(exc)
    return JSONResponse({"error": exc.message}, status_code=exc.status, headers=exc.headers)


async def _starlette_error(request: Request, exc: HTTPException) -> JSONResponse:
    """404/405 and multipart parse errors: the same {"error": ...} shape as ours."""
    forget_traceback(exc)
    detail = exc.detail if isinstance(exc.detail, str) else "bad request"
    if exc.status_code == 404:
        detail = f"no endpoint {request.url.path[:100]}; see GET / (page), POST /v1/classify, GET /v2, /metrics"
    elif exc.status_code == 405:
        detail = f"method {request.method} is not allowed on {request.url.path[:100]}"
    elif exc.status_code == 400:
        detail = f"malformed multipart form ({detail}); send the image as a file part, e.g. curl -F image=@photo.jpg"
    return JSONResponse({"error": detail}, status_code=exc.status_code, headers=getattr(exc, "headers", None))


def build_app(repo, lifespan=None) -> Starlette:
    """repo: the server's Repository (one model, or a model repository)."""
    cfg = repo.config
    middleware = [Middleware(MetricsMiddleware, metrics=repo.metrics, log_access=cfg.access_log),
                  Middleware(GuardMiddleware, loopback_only=cfg.api_key is None and is_loopback(cfg.host),
                             cors=list(cfg.cors))]
    if cfg.cors:
        from starlette.middleware.cors import CORSMiddleware

        middleware.append(Middleware(CORSMiddleware, allow_origins=list(cfg.cors), allow_methods=["GET", "POST"],
                                     allow_headers=["authorization", "content-type"], max_age=600))
    if cfg.api_key is not None:
        middleware.append(Middleware(AuthMiddleware, key=cfg.api_key))
    middleware.append(Middleware(BodyLimitMiddleware, limit=cfg.max_body, budget=repo.budget))
    routes = [*page_routes(repo), *classify.routes(repo), *oip.routes(repo), *kserve_v1.routes(repo)]
    if cfg.web_dir:  # the exported in-browser site (edgeproof.runtime.web), static files only
        from starlette.responses import RedirectResponse
        from starlette.routing import Mount
        from starlette.staticfiles import StaticFiles

        routes += [Route("/web", lambda request: RedirectResponse("/web/"), methods=["GET"]),
                   Mount("/web", StaticFiles(directory=cfg.web_dir, html=True))]
    return Starlette(routes=routes, middleware=middleware, lifespan=lifespan,
                     exception_handlers={HttpError: _http_error, HTTPException: _starlette_error})

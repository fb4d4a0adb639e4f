"""The HTTP service: a JSON API for programs over one run or detector, loaded once, and the web page (app.py) beside
it in the same process. `diffusekit serve PATH` starts it.

    POST /sample   {"n": 8, "temperature": 0.8, "seed": 0, ...} -> images (base64 PNG) or rows
    POST /score    {"rows": [{...}, ...]} or {"images": [base64 PNG, ...]} -> score, p_value, flag (, top_columns)
    POST /nll      rows or images -> bits/dim per item
    GET  /health   the model, its data kind, the version

Requests are checked by the library (the same one-line messages as the command line) and answered 4xx with that
message; nothing a request says is used as a path. Model calls take turns (one lock) on one thread: `serve` runs
them on the main thread and HTTP on a background thread.
"""
import base64
import binascii
import hmac
import io
import json
import queue
import signal
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from fastapi import Body, Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from PIL import Image

from .checkpoint import is_diffusers_folder
from .data.images import open_image, to_8bit
from .detector import AnomalyDetector
from .errors import DiffusekitError, check
from .run import Run

TOKEN_ENV = "DIFFUSEKIT_TOKEN"


@dataclass
class Limits:
    """What one request may ask: its body in bytes, samples per /sample, items per /score and /nll."""
    max_body: int = 8 * 1024 * 1024
    max_samples: int = 256
    max_items: int = 10_000


def open_target(path) -> Run | AnomalyDetector:
    """A detector folder (it holds detector.json), a run folder or a diffusers folder."""
    path = Path(path)
    if (path / "detector.json").is_file():
        return AnomalyDetector.load(path)
    if not ((path / "config.json").is_file() or is_diffusers_folder(path)):
        raise DiffusekitError(f"{path} is neither a run folder (config.json), a diffusers folder (model_index.json) "
                              f"nor a detector folder (detector.json)", "path")
    return Run.load(path)


def encode_png(image: np.ndarray) -> str:
    """One uint8 H x W x C image as base64 PNG text."""
    buf = io.BytesIO()
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def decode_images(items: list, channels: int) -> np.ndarray:
    """base64 PNG / JPEG texts (a data: URL prefix allowed) -> uint8 N x H x W x C with the model's channels."""
    out = []
    for i, text in enumerate(items):
        try:
            im = open_image(io.BytesIO(base64.b64decode(str(text).split(",", 1)[-1], validate=True)))
        except (binascii.Error, ValueError, DiffusekitError):
            raise DiffusekitError(f"images[{i}] is not a base64-encoded PNG or JPEG image", "images") from None
        a = np.asarray(to_8bit(im, channels == 1))
        out.append(a[..., None] if a.ndim == 2 else a)
    shapes = {a.shape for a in out}
    check(len(shapes) == 1, f"the images have different sizes: {sorted(shapes)}", "images")
    return np.stack(out)


class Service:
    """The handlers, apart from HTTP: each takes the request's JSON (a dict) and returns the answer's."""

    def __init__(self, target: Run | AnomalyDetector, limits: Limits | None = None, worker=None):
        """worker: where the API's model calls run (an executor: `submit(fn) -> Future`); default, one lasting
        thread of its own."""
        self.target, self.limits, self.lock = target, limits or Limits(), threading.Lock()
        self.detector = target if isinstance(target, AnomalyDetector) else None
        self.run = target.run if self.detector else target
        # one lasting thread, not the request's: torch's OpenMP team is made per calling thread, so calls on many
        # request threads would each build (and keep) their own. Off the main thread torch's parallel regions are
        # slow (a table's small network: 3x slower on two threads than on one), so a table gets one intra-op thread
        if worker is None:
            threads = 1 if self.run.kind == "vector" else torch.get_num_threads()
            worker = ThreadPoolExecutor(1, thread_name_prefix="diffusekit-model",
                                        initializer=torch.set_num_threads, initargs=(threads,))
        self.worker = worker

    def health(self) -> dict:
        from . import __version__

        r = self.run
        return {"model": self.target.path.name, "type": "detector" if self.detector else "run", "data": r.kind,
                "shape": list(r.model_config.in_shape), "columns": getattr(r.codec, "columns", None),
                "classes": r.class_names, "version": __version__}

    def sample(self, body: dict) -> dict:
        body = dict(body)
        n = body.pop("n", 8)
        check(isinstance(n, int) and 1 <= n <= self.limits.max_samples,
              f"n must be a whole number in 1-{self.limits.max_samples}, got {n!r}", "n")
        label = body.pop("label", None)
        if isinstance(label, str) and label in self.run.class_names:
            label = self.run.class_names.index(label)
        check(label is None or (isinstance(label, int) and 0 <= label < self.run.num_classes),
              f"label must be one of the run's classes ({', '.join(self.run.class_names) or 'none: unconditional'}), "
              f"got {label!r}", "label")
        options = _options(body, ("labels", "return_labels", "callback", "progress"))
        out, labels = self.call(self.run.sample, n, label=label, return_labels=True, **options)
        answer = {"labels": None if labels is None else labels.tolist()}
        if self.run.kind == "vector":
            return {**answer, "rows": json.loads(out.to_json(orient="records"))}
        if self.run.kind == "text":
            return {**answer, "texts": out}
        return {**answer, "images": [encode_png(im) for im in out]}

    def score(self, body: dict) -> dict:
        check(self.detector is not None, "this server holds a run, not a detector; serve a detector folder to score",
              "path")
        fpr = body.get("fpr", 0.01)
        _options({k: v for k, v in body.items() if k not in ("rows", "images", "texts")}, (), allowed=("fpr",))
        data = self._items(body)
        df = self.call(self.detector.score, data, fpr=fpr)
        keep = [c for c in ("score", "p_value", "flag", "top_columns", "unseen_categories", "least_expected",
                            "unseen_characters") if c in df]
        note = {"fpr_note": df.attrs["fpr_note"]} if df.attrs["fpr_note"] else {}
        return {"fpr": df.attrs["fpr"], **note, "items": json.loads(df[keep].to_json(orient="records"))}

    def nll(self, body: dict) -> dict:
        data = self._items(body)
        options = _options({k: v for k, v in body.items() if k not in ("rows", "images", "texts")},
                           ("labels", "class_labels", "progress"))
        lik = self.call(self.run.nll, data, **options)
        s = lik.summary()
        # text: bits per character
        return {"bits_per_dim": lik.bits_per_dim.tolist(), "mean_bits_per_dim": s["bits_per_dim"],
                "mean_bits_per_dim_se": s["bits_per_dim_se"], "method": lik.method, "units": lik.units}

    def call(self, fn, *args, **kwargs):
        """fn(*args, **kwargs) on the model thread, one call at a time (the page's calls take the same lock)."""
        def locked():
            with self.lock:
                return fn(*args, **kwargs)
        return self.worker.submit(locked).result()

    def _items(self, body: dict):
        """The request's rows (a table) or images, as data the library reads, checked for kind and count."""
        key = {"vector": "rows", "image": "images", "text": "texts"}[self.run.kind]
        for other in {"rows", "images", "texts"} - {key}:
            check(other not in body, f"this model is of {self.run.kind}s: send {key!r}, not {other!r}", key)
        items = body.get(key)
        check(isinstance(items, list) and 1 <= len(items) <= self.limits.max_items,
              f"{key} must be a list of 1-{self.limits.max_items} items", key)
        if key == "texts":
            check(all(isinstance(t, str) for t in items), "texts must be strings", key)
            return items
        if key == "images":
            return decode_images(items, self.run.codec.channels)
        check(all(isinstance(r, dict) for r in items), "rows must be objects mapping column names to values", key)
        return pd.DataFrame.from_records(items)


class MainThreadWorker:
    """An executor whose calls run on the thread that calls `work_until`: `serve` gives it the main thread, where
    torch's intra-op threads are fastest (a table detector scores about 15% faster there on two threads than on one
    thread of a worker)."""

    def __init__(self):
        self.calls = queue.Queue()

    def submit(self, fn, *args, **kwargs) -> Future:
        future = Future()
        self.calls.put((future, fn, args, kwargs))
        return future

    def work_until(self, done):
        """Run the submitted calls, in order, until done() is true."""
        while not done():
            try:
                future, fn, args, kwargs = self.calls.get(timeout=0.1)
            except queue.Empty:
                continue
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args, **kwargs))
                except Exception as e:  # handed to the request, which answers it
                    future.set_exception(e)
                except BaseException as e:  # Ctrl-C during a call: the request is answered, and the server stops
                    future.set_exception(e)
                    raise


def serve(app, worker: MainThreadWorker, host: str = "127.0.0.1", port: int = 7860):
    """Serve app (made by `create_app(..., worker=worker)`) until Ctrl-C: HTTP (uvicorn) on a background thread, the
    model's calls on this thread (call it from the main thread)."""
    import uvicorn

    if threading.current_thread() is threading.main_thread():  # Ctrl-C stops it even where the parent ignored SIGINT
        signal.signal(signal.SIGINT, signal.default_int_handler)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    http = threading.Thread(target=server.run, name="diffusekit-http", daemon=True)
    http.start()
    try:
        worker.work_until(lambda: not http.is_alive())
    except KeyboardInterrupt:
        server.should_exit = True
        http.join(10)
        return
    check(server.started, f"could not listen on {host}:{port} (is the port in use?)", "port")


def _options(body: dict, reserved, allowed=None) -> dict:
    """A request's options for a library call: none of the call's own Python-only arguments, values JSON scalars."""
    for k, v in body.items():
        check(k not in reserved and (allowed is None or k in allowed), f"unknown option {k!r}", k)
        check(v is None or isinstance(v, (bool, int, float, str)), f"{k} must be a number or text, got {v!r}", k)
    return body


def create_app(target: Run | AnomalyDetector, token: str | None = None, limits: Limits | None = None,
               ui: bool = True, worker=None):
    """The FastAPI app: the JSON API, its OpenAPI description (/openapi.json, read at /docs) and, with ui, the web
    page at /. token: every API call but /health needs `Authorization: Bearer TOKEN`."""
    from . import __version__

    service = Service(target, limits, worker)
    app = FastAPI(title="diffusekit", version=__version__, docs_url=None, redoc_url=None,
                  description=f"The JSON API of one {'detector' if service.detector else 'run'}: "
                              f"{target.path.name}.")

    @app.middleware("http")
    async def bounded_body(request: Request, call_next):
        size = request.headers.get("content-length")
        if size is not None and (not size.isdigit() or int(size) > service.limits.max_body):
            return JSONResponse({"detail": f"the request body is over {service.limits.max_body} bytes"}, 413)
        return await call_next(request)

    @app.exception_handler(DiffusekitError)
    async def said(request, e: DiffusekitError):
        return JSONResponse({"detail": str(e)}, 400)

    def authorised(request: Request):
        if token is None:
            return
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            raise HTTPException(401, "a bearer token is required: Authorization: Bearer TOKEN")

    guarded = [Depends(authorised)]
    example_rows = {"rows": [{c: 0 for c in (getattr(service.run.codec, "columns", None) or ["column"])}]}

    @app.get("/health", summary="the model, its data kind and the version")
    def health() -> dict:
        return service.health()

    @app.post("/sample", dependencies=guarded, summary="new samples: images as base64 PNG, or table rows")
    def sample(body: dict[str, Any] = Body(..., examples=[{"n": 4, "temperature": 0.8, "seed": 0}])) -> dict:
        return service.sample(body)

    @app.post("/score", dependencies=guarded, summary="anomaly scores, conformal p-values and flags at fpr")
    def score(body: dict[str, Any] = Body(..., examples=[{**example_rows, "fpr": 0.01}])) -> dict:
        return service.score(body)

    @app.post("/nll", dependencies=guarded, summary="negative log-likelihood in bits/dim per item")
    def nll(body: dict[str, Any] = Body(..., examples=[{**example_rows, "method": "ode"}])) -> dict:
        return service.nll(body)

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return HTMLResponse(openapi_page(app.openapi()))

    if ui:
        try:
            import gradio as gr

            from .app import build_ui
        except ImportError:
            raise DiffusekitError("the web page needs the ui extra: pip install 'diffusekit[ui]' (or serve the API "
                                  "alone: --no-ui)") from None

        app = gr.mount_gradio_app(app, build_ui(service), path="/ui")

        @app.get("/", include_in_schema=False)
        def home():
            return RedirectResponse("/ui/")
    return app


def openapi_page(spec: dict) -> str:
    """The OpenAPI description as one self-contained HTML page (no scripts or fonts from elsewhere)."""
    from html import escape

    parts = [f"<h1>{escape(spec['info']['title'])} {escape(spec['info']['version'])}</h1>",
             f"<p>{escape(spec['info'].get('description', ''))} Machine-readable: <a href='/openapi.json'>"
             f"/openapi.json</a>.</p>"]
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            parts.append(f"<h2><code>{method.upper()} {escape(path)}</code></h2><p>{escape(op.get('summary', ''))}</p>")
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {})
            for ex in body.get("schema", {}).get("examples", []):
                parts.append(f"<pre>{escape(json.dumps(ex, indent=2))}</pre>")
    return "<!doctype html><meta charset=utf-8><title>diffusekit API</title>" + "".join(parts)

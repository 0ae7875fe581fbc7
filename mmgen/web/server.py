"""The server behind `mmgen serve`: JSON endpoints, one generation at a time, PNGs in memory.

Endpoints (all answers are JSON unless they are a PNG or the page itself):

    GET  /                              the page (static/page.html, app.js, style.css)
    GET  /api/models                    the model choices: shipped generators + checkpoints under --runs
    GET  /api/model?id=ID               {id, kind, vocabulary}: loads the pipeline on first use
    POST /api/check    {model, prompt}  {warnings, error}: the model's prompt check, nothing generated
    POST /api/generate {model, prompt, num_images, seed, guidance, candidates, rerank, steps}
                                        202 {job, warnings, seed} or 400 {error}
    GET  /api/jobs/ID                   {status: queued|running|done|error, done, total, position, ...}
    GET  /api/jobs/ID/grid.png          the grid (make_grid, captions); ?download=1 to save it
    GET  /api/jobs/ID/images/P/N.png    one image, nearest-neighbour upscaled; ?download=1

The page only names a model by the id this server gave it, so it can load the shipped
generators and checkpoints found under the runs directory named at start-up, never a path
typed into the page. Generations run one at a time on a worker thread behind a queue; a bad
request gets a 4xx with a one-line message and the server keeps going.
"""
from __future__ import annotations

import io
import json
import math
import os
import queue
import random
import secrets
import socket
import sys
import threading
import time
import traceback
from collections import OrderedDict
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

# The generators that ship in checkpoints/ (names load_pipeline knows) and their kind.
SHIPPED_MODELS: dict[str, str] = {"dalle_shapes": "dalle", "dalle_emoji": "dalle", "ddpm_shapes": "ddpm",
                                   "ddpm_emoji": "ddpm", "ddpm_animal_mnist": "ddpm"}
# model_type values in a checkpoint's config.json that a pipeline can generate from.
GENERATOR_TYPES = ("dalle", "ddpm")

# What one request may ask for: bounds that keep one user from stalling the page for hours.
LIMITS: dict[str, Any] = {
    "prompts": 8,          # one prompt per line
    "prompt_chars": 500,
    "num_images": (1, 16),
    "candidates": (1, 64),
    "steps": (1, 1000),
    "guidance": (0.0, 50.0),
    "seed": (0, 2**31 - 1),
}
DEFAULTS: dict[str, Any] = {"num_images": 4, "guidance": 3.0, "candidates": 1, "rerank": True, "steps": 25}
MAX_BODY = 64 * 1024       # bytes of JSON a request may send
MAX_WAITING = 16           # queued generations before the server answers "busy"
KEPT_JOBS = 32             # finished jobs whose images stay downloadable
DISPLAY_SIZE = 256         # gallery images are upscaled (nearest neighbour) to about this many pixels
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
STATIC = Path(__file__).with_name("static")
STATIC_FILES = {  # request path -> (file in static/, content type); nothing else is served from disk
    "/": ("page.html", "text/html; charset=utf-8"),
    "/index.html": ("page.html", "text/html; charset=utf-8"),
    "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/static/style.css": ("style.css", "text/css; charset=utf-8"),
}
# The browser may load nothing but this server's own files: the page stays offline by construction.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


class RequestError(Exception):
    """A request the page should explain: an HTTP status and a one-line message."""

    def __init__(self, message: str, status: int = HTTPStatus.BAD_REQUEST):
        super().__init__(message)
        self.status = int(status)


@dataclass(frozen=True)
class ModelChoice:
    """A model the page may pick: `id` is what the page sends, `spec` what load_pipeline gets."""

    id: str
    label: str
    spec: str
    kind: str | None = None

    def to_json(self) -> dict:
        return {"id": self.id, "label": self.label, "kind": self.kind}


def find_checkpoints(runs: str | os.PathLike, max_depth: int = 4) -> list[ModelChoice]:
    """Checkpoint directories under `runs` (a config.json whose model_type is a generator).

    Looks `max_depth` folders deep, skips hidden folders and unreadable configs; ids are
    "runs/<path relative to runs>", sorted."""
    root = Path(runs)
    found: list[ModelChoice] = []

    def visit(folder: Path, depth: int) -> None:
        config = folder / "config.json"
        if config.is_file():
            try:
                model_type = json.loads(config.read_text()).get("model_type")
            except (OSError, ValueError, AttributeError):
                model_type = None
            if model_type in GENERATOR_TYPES:
                rel = folder.relative_to(root).as_posix()
                found.append(ModelChoice(id=f"runs/{rel}", label=f"{root.name}/{rel} ({model_type})",
                                         spec=str(folder), kind=model_type))
        if depth >= max_depth:
            return
        try:
            children = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", "__")))
        except OSError:
            return
        for child in children:
            visit(child, depth + 1)

    if root.is_dir():
        for child in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "__"))):
            visit(child, 1)
    return sorted(found, key=lambda c: c.id)


def _default_pipeline_factory(spec: str):
    from mmgen.pipelines import load_pipeline  # imported on first use: `mmgen --help` stays light
    return load_pipeline(spec)


def _default_grid_maker(out, scale: int = 8, captions: bool = True):
    from mmgen.pipelines import make_grid
    return make_grid(out, scale=scale, captions=captions)


def _png(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


@dataclass
class Job:
    """One generation request and, once done, its PNGs (kept in memory)."""

    id: str
    model: str
    prompts: list[str]
    params: dict[str, Any]
    warnings: list[str]
    status: str = "queued"           # queued -> running -> done | error
    done: int = 0
    total: int = 0
    error: str | None = None
    scores: list[list[float]] | None = None
    image_size: int = 0              # displayed width/height of one image, in pixels
    grid: bytes | None = None
    images: dict[tuple[int, int], bytes] = field(default_factory=dict)
    created: float = field(default_factory=time.time)
    seconds: float | None = None

    def progress(self, done: int, total: int) -> None:
        self.done, self.total = int(done), int(total)

    def to_json(self, position: int | None = None) -> dict:
        out = {"job": self.id, "status": self.status, "done": self.done, "total": self.total,
               "model": self.model, "prompts": self.prompts, "seed": self.params["seed"],
               "warnings": self.warnings, "error": self.error, "position": position}
        if self.status == "done":
            n = self.params["num_images"]
            out.update(seconds=self.seconds, image_size=self.image_size, scores=self.scores,
                       grid=f"/api/jobs/{self.id}/grid.png",
                       images=[[f"/api/jobs/{self.id}/images/{p}/{i}.png" for i in range(n)]
                               for p in range(len(self.prompts))])
        return out


class WebServer(ThreadingHTTPServer):
    """The HTTP server plus its model cache, job table and one generation worker.

    `pipeline_factory(spec) -> pipeline` and `grid_maker(out, scale=, captions=) -> PIL.Image`
    default to mmgen.pipelines' load_pipeline and make_grid (tests pass stand-ins)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], *, runs: str | os.PathLike | None = None,
                 pipeline_factory: Callable[[str], Any] | None = None,
                 grid_maker: Callable[..., Any] | None = None,
                 display_size: int = DISPLAY_SIZE, verbose: bool = False):
        if runs is not None and not Path(runs).is_dir():
            raise FileNotFoundError(f"runs directory {str(runs)!r} does not exist")
        self.runs = None if runs is None else Path(runs)
        self.pipeline_factory = pipeline_factory or _default_pipeline_factory
        self.grid_maker = grid_maker or _default_grid_maker
        self.display_size = int(display_size)
        self.verbose = verbose
        self._pipes: dict[str, Any] = {}
        self._load_lock = threading.Lock()       # one model load at a time
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._waiting: list[str] = []            # queued job ids, in order
        self._jobs_lock = threading.Lock()
        self._queue: queue.Queue[Job | None] = queue.Queue()
        if ":" in str(address[0]):
            self.address_family = socket.AF_INET6
        super().__init__(address, Handler)
        self.loopback_only = self.server_address[0] in ("127.0.0.1", "::1") or \
            str(self.server_address[0]).startswith("127.")
        self._worker = threading.Thread(target=self._work, name="mmgen-serve-worker", daemon=True)
        self._worker.start()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        host = "127.0.0.1" if host in ("0.0.0.0", "") else host
        return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"

    def server_close(self) -> None:
        self._queue.put(None)
        self._worker.join(timeout=5)
        super().server_close()

    # ---- models -------------------------------------------------------------------------
    def models(self) -> list[ModelChoice]:
        shipped = [ModelChoice(id=name, label=f"{name} ({kind}, shipped)", spec=name, kind=kind)
                   for name, kind in SHIPPED_MODELS.items()]
        return shipped + (find_checkpoints(self.runs) if self.runs is not None else [])

    def choice(self, model_id: Any) -> ModelChoice:
        if not isinstance(model_id, str) or not model_id:
            raise RequestError("no model chosen: pick one from the list")
        for c in self.models():
            if c.id == model_id:
                return c
        raise RequestError(f"unknown model {model_id!r}: pick one from the list "
                           f"(the page offers the shipped generators and checkpoints under the runs directory)")

    def pipeline(self, model_id: Any):
        choice = self.choice(model_id)
        with self._load_lock:
            pipe = self._pipes.get(choice.id)
            if pipe is None:
                try:
                    pipe = self.pipeline_factory(choice.spec)
                except (ValueError, TypeError, FileNotFoundError, KeyError, OSError, ImportError) as e:
                    raise RequestError(f"could not load model {choice.id!r}: {e}",
                                       HTTPStatus.UNPROCESSABLE_ENTITY) from e
                self._pipes[choice.id] = pipe
        return pipe

    # ---- requests -----------------------------------------------------------------------
    def parse_prompts(self, text: Any) -> list[str]:
        if not isinstance(text, str):
            raise RequestError("the prompt must be text")
        prompts = [line.strip() for line in text.splitlines() if line.strip()]
        if not prompts:
            raise RequestError("empty prompt: type what to draw, e.g. 'a red circle'")
        if len(prompts) > LIMITS["prompts"]:
            raise RequestError(f"too many prompts: {len(prompts)} lines, at most {LIMITS['prompts']} (one per line)")
        for p in prompts:
            if len(p) > LIMITS["prompt_chars"]:
                raise RequestError(f"prompt too long: {len(p)} characters, at most {LIMITS['prompt_chars']}")
        return prompts

    def check(self, payload: dict) -> tuple[list[str], list[str], Any]:
        """(prompts, warnings, pipeline) or RequestError: the model's own prompt check."""
        pipe = self.pipeline(payload.get("model"))
        prompts = self.parse_prompts(payload.get("prompt"))
        try:
            warnings = [str(w) for w in pipe.check_prompts(prompts)]
        except ValueError as e:
            raise RequestError(str(e)) from e
        return prompts, warnings, pipe

    def submit(self, payload: dict) -> Job:
        prompts, warnings, pipe = self.check(payload)
        seed = payload.get("seed")
        params = {
            "num_images": _int(payload, "num_images", DEFAULTS["num_images"], *LIMITS["num_images"]),
            "seed": random.randint(*LIMITS["seed"]) if seed in (None, "") else _int(payload, "seed", 0, *LIMITS["seed"]),
            "guidance": _float(payload, "guidance", DEFAULTS["guidance"], *LIMITS["guidance"]),
            "candidates": _int(payload, "candidates", DEFAULTS["candidates"], *LIMITS["candidates"]),
            "rerank": _bool(payload, "rerank", DEFAULTS["rerank"]),
            "steps": _int(payload, "steps", DEFAULTS["steps"], *LIMITS["steps"]),
        }
        job = Job(id=secrets.token_hex(8), model=payload["model"], prompts=prompts, params=params,
                  warnings=warnings)
        with self._jobs_lock:
            if len(self._waiting) >= MAX_WAITING:
                raise RequestError(f"the server is busy: {len(self._waiting)} generations are waiting; "
                                   f"try again in a moment", HTTPStatus.SERVICE_UNAVAILABLE)
            self._jobs[job.id] = job
            self._waiting.append(job.id)
            self._forget_old_jobs()
        self._queue.put(job)
        return job

    def job(self, job_id: str) -> tuple[Job, int | None]:
        with self._jobs_lock:
            job = self._jobs.get(job_id)
            if job is None:
                raise RequestError(f"no job {job_id!r} (finished jobs are kept for the last {KEPT_JOBS} "
                                   f"generations; generate again)", HTTPStatus.NOT_FOUND)
            position = self._waiting.index(job_id) + 1 if job_id in self._waiting else None
        return job, position

    def _forget_old_jobs(self) -> None:
        finished = [k for k, j in self._jobs.items() if j.status in ("done", "error")]
        for k in finished[:max(0, len(finished) - KEPT_JOBS)]:
            del self._jobs[k]

    # ---- the worker: one generation at a time -------------------------------------------
    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            with self._jobs_lock:
                if job.id in self._waiting:
                    self._waiting.remove(job.id)
                job.status = "running"
            start = time.perf_counter()
            try:
                self._generate(job)
                job.seconds = round(time.perf_counter() - start, 2)
                job.status = "done"
            except RequestError as e:
                job.error, job.status = str(e), "error"
            except ValueError as e:  # the pipeline's own one-line message for a bad request
                job.error, job.status = str(e), "error"
            except Exception as e:  # noqa: BLE001 - a failed generation must not stop the worker
                traceback.print_exc(file=sys.stderr)
                job.error, job.status = f"generation failed: {type(e).__name__}: {e}", "error"
            finally:
                with self._jobs_lock:
                    self._forget_old_jobs()

    def _generate(self, job: Job) -> None:
        import numpy as np
        from PIL import Image

        pipe = self.pipeline(job.model)
        p = job.params
        kw = {"steps": p["steps"]} if pipe.kind == "ddpm" else {}  # only diffusion takes sampling steps
        out = pipe(job.prompts, num_images=p["num_images"], seed=p["seed"], guidance=p["guidance"],
                   candidates=p["candidates"], rerank=p["rerank"], progress=job.progress, **kw)
        images = out.images.detach().cpu().numpy() if hasattr(out.images, "detach") else np.asarray(out.images)
        if images.ndim != 5 or images.shape[2] != 3 or images.dtype != np.uint8:
            raise TypeError(f"the pipeline returned images of shape {images.shape} and dtype {images.dtype}; "
                            f"expected uint8 (prompts, num_images, 3, H, W)")
        height, width = images.shape[-2:]
        scale = max(1, self.display_size // max(height, width))
        for i in range(images.shape[0]):
            for j in range(images.shape[1]):
                img = Image.fromarray(np.ascontiguousarray(images[i, j].transpose(1, 2, 0)))  # (H, W, 3)
                job.images[(i, j)] = _png(img.resize((width * scale, height * scale), Image.NEAREST))
        job.image_size = width * scale
        job.grid = _png(self.grid_maker(out, scale=scale, captions=True))
        if out.scores is not None:
            scores = out.scores.tolist() if hasattr(out.scores, "tolist") else out.scores
            job.scores = [[round(float(s), 4) for s in row] for row in scores]
        if getattr(out, "seed", None) is not None:
            job.params["seed"] = int(out.seed)
        job.warnings = job.warnings + [str(w) for w in (out.warnings or []) if str(w) not in job.warnings]
        job.done = job.total = max(job.total, 1)


def _number(payload: dict, name: str, default, cast):
    value = payload.get(name)
    if value is None or value == "":
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise RequestError(f"{name.replace('_', ' ')} must be a number, got {value!r}")
    try:
        return cast(value)
    except (TypeError, ValueError):
        raise RequestError(f"{name.replace('_', ' ')} must be a number, got {value!r}") from None


def _int(payload: dict, name: str, default: int, lo: int, hi: int) -> int:
    value = _number(payload, name, default, float)
    if not math.isfinite(value) or value != int(value) or not lo <= value <= hi:
        raise RequestError(f"{name.replace('_', ' ')} must be a whole number from {lo} to {hi}, "
                           f"got {payload.get(name)!r}")
    return int(value)


def _float(payload: dict, name: str, default: float, lo: float, hi: float) -> float:
    value = _number(payload, name, default, float)
    if not math.isfinite(value) or not lo <= value <= hi:
        raise RequestError(f"{name} must be a number from {lo:g} to {hi:g}, got {payload.get(name)!r}")
    return float(value)


def _bool(payload: dict, name: str, default: bool) -> bool:
    value = payload.get(name, default)
    if not isinstance(value, bool):
        raise RequestError(f"{name} must be true or false, got {value!r}")
    return value


class Handler(BaseHTTPRequestHandler):
    server: WebServer
    server_version = "mmgen-serve"
    sys_version = ""

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        if self.server.verbose:
            super().log_message(format, *args)

    # ---- answers --------------------------------------------------------------------------
    def _send(self, status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cache-Control", "no-store")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, obj: Any, status: int = HTTPStatus.OK) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json")

    def _error(self, message: str, status: int) -> None:
        self._json({"error": message}, status)

    def _guarded(self, route: Callable[[], None]) -> None:
        try:
            if not self._host_ok():
                raise RequestError("this server answers only to 127.0.0.1 / localhost", HTTPStatus.FORBIDDEN)
            route()
        except RequestError as e:
            self._error(str(e), e.status)
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as e:  # noqa: BLE001 - one bad request must never take the server down
            traceback.print_exc(file=sys.stderr)
            try:
                self._error(f"internal error: {type(e).__name__}: {e}", HTTPStatus.INTERNAL_SERVER_ERROR)
            except OSError:
                pass

    def _host_ok(self) -> bool:
        """Bound to loopback, answer only requests addressed to it (no DNS rebinding)."""
        if not self.server.loopback_only:
            return True
        host = self.headers.get("Host", "")
        try:
            name = urlsplit(f"//{host}").hostname
        except ValueError:
            return False
        return name in LOOPBACK

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self._guarded(self._get)

    def do_HEAD(self) -> None:  # noqa: N802
        self._guarded(self._get)

    def do_POST(self) -> None:  # noqa: N802
        self._guarded(self._post)

    # ---- routes ---------------------------------------------------------------------------
    def _get(self) -> None:
        url = urlsplit(self.path)
        path, query = url.path, parse_qs(url.query)
        if path in STATIC_FILES:
            name, ctype = STATIC_FILES[path]
            return self._send(HTTPStatus.OK, (STATIC / name).read_bytes(), ctype)
        if path == "/api/models":
            return self._json({"models": [c.to_json() for c in self.server.models()],
                               "limits": LIMITS, "defaults": DEFAULTS})
        if path == "/api/model":
            model_id = query.get("id", [""])[0]
            pipe = self.server.pipeline(model_id)
            return self._json({"id": model_id, "kind": pipe.kind, "vocabulary": list(pipe.vocabulary())})
        parts = path.strip("/").split("/")
        if parts[:2] == ["api", "jobs"] and len(parts) >= 3:
            job, position = self.server.job(parts[2])
            download = query.get("download", ["0"])[0] not in ("0", "")
            if len(parts) == 3:
                return self._json(job.to_json(position))
            if job.status != "done":
                raise RequestError(f"job {job.id} has no images yet ({job.status})", HTTPStatus.CONFLICT)
            if parts[3:] == ["grid.png"]:
                return self._png(job.grid, f"mmgen-{job.id}-grid.png", download)
            if len(parts) == 6 and parts[3] == "images" and parts[5].endswith(".png"):
                try:
                    key = (int(parts[4]), int(parts[5][:-4]))
                except ValueError:
                    key = None
                if key in job.images:
                    return self._png(job.images[key], f"mmgen-{job.id}-{key[0]}-{key[1]}.png", download)
        raise RequestError(f"not found: {path}", HTTPStatus.NOT_FOUND)

    def _png(self, data: bytes, filename: str, download: bool) -> None:
        extra = {"Content-Disposition": f'attachment; filename="{filename}"'} if download else None
        self._send(HTTPStatus.OK, data, "image/png", extra)

    def _post(self) -> None:
        path = urlsplit(self.path).path
        if path not in ("/api/check", "/api/generate"):
            raise RequestError(f"not found: {path}", HTTPStatus.NOT_FOUND)
        # JSON only: a cross-site form cannot send it without a preflight this server never grants.
        if self.headers.get("Content-Type", "").split(";")[0].strip() != "application/json":
            raise RequestError("send JSON (Content-Type: application/json)", HTTPStatus.UNSUPPORTED_MEDIA_TYPE)
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            raise RequestError("bad Content-Length") from None
        if length > MAX_BODY:
            raise RequestError(f"request too large: {length} bytes, at most {MAX_BODY}",
                               HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
        try:
            payload = json.loads(self.rfile.read(length) or b"null")
        except ValueError:
            raise RequestError("the request body is not JSON") from None
        if not isinstance(payload, dict):
            raise RequestError("the request body must be a JSON object")
        if path == "/api/check":
            try:
                _, warnings, _ = self.server.check(payload)
            except RequestError as e:
                if e.status != HTTPStatus.BAD_REQUEST:
                    raise
                return self._json({"warnings": [], "error": str(e)})
            return self._json({"warnings": warnings, "error": None})
        job = self.server.submit(payload)
        return self._json({"job": job.id, "warnings": job.warnings, "seed": job.params["seed"]},
                          HTTPStatus.ACCEPTED)


def make_server(host: str = "127.0.0.1", port: int = 8000, *, runs: str | os.PathLike | None = None,
                pipeline_factory: Callable[[str], Any] | None = None,
                grid_maker: Callable[..., Any] | None = None, verbose: bool = False) -> WebServer:
    """A WebServer bound to host:port (port 0 picks a free one), not yet serving:
    call `serve_forever()` (in a thread for tests) and `shutdown()` + `server_close()` after."""
    return WebServer((host, port), runs=runs, pipeline_factory=pipeline_factory, grid_maker=grid_maker,
                     verbose=verbose)

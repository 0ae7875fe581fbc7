"""`mmgen serve` over HTTP: the endpoints, bad input, the queue, and (once mmgen.pipelines is
there) one real generation with the shipped dalle_shapes. The page in a browser:
tests/test_serve_browser.py."""
from __future__ import annotations

import importlib.util
import io
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest
from PIL import Image

from mmgen.cli import build_parser, main
from mmgen.web import SHIPPED_MODELS, find_checkpoints, make_server
from tests.serve_fakes import FakePipeline, fake_make_grid

REPO = Path(__file__).resolve().parents[1]


@contextmanager
def running(pipe=None, factory=None, **kw):
    """A server on a free port in a thread; yields (server, base url)."""
    pipe = pipe or FakePipeline()
    seen = kw.pop("seen", [])

    def default_factory(spec):
        seen.append(spec)
        return pipe

    server = make_server("127.0.0.1", 0, pipeline_factory=factory or default_factory,
                         grid_maker=fake_make_grid, **kw)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server, server.url.rstrip("/")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def call(base, path, body=None, *, method=None, headers=None, raw=None):
    """(status, headers, body bytes); 4xx/5xx are returned, not raised."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    hdrs = {"Content-Type": "application/json"} if data is not None else {}
    hdrs.update(headers or {})
    req = urllib.request.Request(base + path, data=data, headers=hdrs, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def jcall(base, path, body=None, **kw):
    status, _, data = call(base, path, body, **kw)
    return status, json.loads(data)


def wait_job(base, job, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, info = jcall(base, f"/api/jobs/{job}")
        assert status == 200, info
        if info["status"] in ("done", "error"):
            return info
        time.sleep(0.02)
    raise AssertionError(f"job {job} did not finish in {timeout}s: {info}")


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    img = Image.open(io.BytesIO(data))
    img.load()
    return img.size


def generate(base, **body):
    body = {"model": "dalle_shapes", "prompt": "a red circle", "num_images": 2, **body}
    return jcall(base, "/api/generate", body)


# ---- the page and the model list ------------------------------------------------------------
def test_page_and_static_files_are_served_with_an_offline_policy():
    with running() as (_, base):
        status, headers, page = call(base, "/")
        assert status == 200 and headers["Content-Type"].startswith("text/html")
        assert b'id="prompt"' in page and b"/static/app.js" in page
        csp = headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp
        for path in ("/static/app.js", "/static/style.css"):
            status, _, body = call(base, path)
            assert status == 200 and body
        # nothing in the page reaches outside this server
        for path in ("/", "/static/app.js", "/static/style.css"):
            text = call(base, path)[2].decode()
            assert "http://" not in text and "https://" not in text and "//fonts." not in text, path
        assert call(base, "/static/../server.py")[0] == 404
        assert call(base, "/etc/passwd")[0] == 404


def test_models_lists_shipped_generators_and_checkpoints_under_runs(tmp_path):
    def ckpt(rel, model_type):
        d = tmp_path / rel
        d.mkdir(parents=True)
        (d / "config.json").write_text(json.dumps({"model_type": model_type, "config": {}}))

    ckpt("dalle_a", "dalle")
    ckpt("sweep/ddpm_b/final", "ddpm")
    ckpt("clip_c", "clip")                       # not a generator
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    ckpt(".hidden", "dalle")
    assert [c.id for c in find_checkpoints(tmp_path)] == ["runs/dalle_a", "runs/sweep/ddpm_b/final"]

    with running(runs=tmp_path) as (_, base):
        status, data = jcall(base, "/api/models")
        assert status == 200
        ids = [m["id"] for m in data["models"]]
        assert ids == list(SHIPPED_MODELS) + ["runs/dalle_a", "runs/sweep/ddpm_b/final"]
        ckpt("later", "dalle")                   # a run that finished after start-up shows up too
        ids = [m["id"] for m in jcall(base, "/api/models")[1]["models"]]
        assert "runs/later" in ids


def test_model_info_loads_once_and_never_takes_a_path_from_the_page(tmp_path):
    seen = []
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "config.json").write_text(json.dumps({"model_type": "ddpm"}))
    with running(runs=tmp_path, seen=seen) as (_, base):
        status, info = jcall(base, "/api/model?id=dalle_shapes")
        assert status == 200 and info["kind"] == "dalle" and info["vocabulary"] == sorted(info["vocabulary"])
        assert "circle" in info["vocabulary"]
        jcall(base, "/api/model?id=dalle_shapes")
        assert seen == ["dalle_shapes"]          # cached after the first load
        assert jcall(base, "/api/model?id=runs/mine")[0] == 200
        assert seen[-1] == str(tmp_path / "mine")
        for bad in ("checkpoints/dalle_shapes", str(tmp_path / "mine"), "../etc", "/etc/passwd", ""):
            status, err = jcall(base, f"/api/model?id={urllib.request.quote(bad)}")
            assert status == 400 and "model" in err["error"], bad
            status, err = generate(base, model=bad)
            assert status == 400, bad
        assert seen == ["dalle_shapes", str(tmp_path / "mine")]


def test_a_model_that_fails_to_load_is_a_message():
    def factory(spec):
        raise FileNotFoundError(f"no checkpoint at {spec}")

    with running(factory=factory) as (_, base):
        status, err = jcall(base, "/api/model?id=ddpm_shapes")
        assert status == 422 and "could not load model 'ddpm_shapes'" in err["error"]
        assert jcall(base, "/api/models")[0] == 200


# ---- generating ---------------------------------------------------------------------------
def test_generate_returns_upscaled_pngs_scores_grid_and_the_seed():
    pipe = FakePipeline(kind="ddpm")
    with running(pipe) as (_, base):
        status, started = generate(base, prompt="a red circle\n\n  a blue square  ", num_images=3, seed=7,
                                   guidance=2.5, candidates=4, rerank=True, steps=10)
        assert status == 202 and started["seed"] == 7 and started["warnings"] == []
        info = wait_job(base, started["job"])
        assert info["status"] == "done", info
        assert info["prompts"] == ["a red circle", "a blue square"]
        assert info["done"] == info["total"] == pipe.steps_total
        assert pipe.calls[-1] == dict(prompts=["a red circle", "a blue square"], num_images=3, seed=7,
                                      guidance=2.5, candidates=4, rerank=True, steps=10)
        assert info["image_size"] == 256 and len(info["images"]) == 2 and len(info["images"][0]) == 3
        assert len(info["scores"]) == 2 and all(0 <= s <= 1 for row in info["scores"] for s in row)
        status, headers, data = call(base, info["images"][1][2])
        assert status == 200 and headers["Content-Type"] == "image/png" and png_size(data) == (256, 256)
        img = Image.open(io.BytesIO(data)).convert("RGB")
        # nearest-neighbour: each 8x8 block is one source pixel
        block = {img.getpixel((x, y)) for x in range(8, 16) for y in range(16, 24)}
        assert len(block) == 1
        assert "Content-Disposition" not in headers
        status, headers, data = call(base, info["images"][0][0] + "?download=1")
        assert "attachment" in headers["Content-Disposition"] and png_size(data) == (256, 256)
        status, headers, grid = call(base, info["grid"] + "?download=1")
        assert status == 200 and png_size(grid) == (3 * 256, 2 * 256) and "attachment" in headers["Content-Disposition"]
        # same seed, same images
        again = wait_job(base, generate(base, prompt="a red circle\na blue square", num_images=3, seed=7,
                                        guidance=2.5, candidates=4, steps=10)[1]["job"])
        assert call(base, again["images"][1][2])[2] == call(base, info["images"][1][2])[2]
        assert call(base, f"/api/jobs/{info['job']}/images/5/0.png")[0] == 404


def test_sampling_steps_go_to_diffusion_models_only():
    pipe = FakePipeline(kind="dalle")
    with running(pipe) as (_, base):
        assert wait_job(base, generate(base, steps=10)[1]["job"])["status"] == "done"
        assert pipe.calls[-1]["steps"] == "unset"
        pipe.kind = "ddpm"
        assert wait_job(base, generate(base, steps=10)[1]["job"])["status"] == "done"
        assert pipe.calls[-1]["steps"] == 10


def test_seed_is_random_by_default_and_shown():
    pipe = FakePipeline()
    with running(pipe) as (_, base):
        seeds = set()
        for seed in (None, ""):
            status, started = generate(base, seed=seed)
            assert status == 202 and isinstance(started["seed"], int)
            info = wait_job(base, started["job"])
            assert info["seed"] == started["seed"] == pipe.calls[-1]["seed"]
            seeds.add(info["seed"])
        assert len(seeds) == 2
        info = wait_job(base, generate(base, rerank=False)[1]["job"])
        assert info["status"] == "done" and info["scores"] is None


@pytest.mark.parametrize("body, status, words", [
    ({"prompt": ""}, 400, "empty prompt"),
    ({"prompt": "   \n  "}, 400, "empty prompt"),
    ({"prompt": "red " * 20}, 400, "too long"),
    ({"prompt": "x" * 600}, 400, "too long"),
    ({"prompt": "\n".join(["red"] * 9)}, 400, "too many prompts"),
    ({"prompt": "zebra unicorn"}, 400, "knows no word"),
    ({"prompt": 5}, 400, "must be text"),
    ({"num_images": 0}, 400, "num images must be a whole number from 1 to 16"),
    ({"num_images": 2.5}, 400, "whole number"),
    ({"num_images": "four"}, 400, "must be a number"),
    ({"num_images": True}, 400, "must be a number"),
    ({"guidance": float("inf")}, 400, "guidance"),
    ({"guidance": -1}, 400, "guidance must be a number from 0 to 50"),
    ({"seed": -3}, 400, "seed"),
    ({"steps": 0}, 400, "steps"),
    ({"candidates": 1000}, 400, "candidates"),
    ({"rerank": "yes"}, 400, "rerank must be true or false"),
    ({"model": None}, 400, "no model chosen"),
])
def test_bad_input_is_a_one_line_message_and_the_server_keeps_going(body, status, words):
    with running() as (_, base):
        raw = json.dumps({"model": "dalle_shapes", "prompt": "a red circle", **body}).replace("Infinity", "1e999")
        got, err = jcall(base, "/api/generate", raw=raw.encode())
        assert got == status and words in err["error"] and "\n" not in err["error"], err
        # the check endpoint reports the same problem without failing the request
        if "prompt" in body and isinstance(body["prompt"], str):
            ok, checked = jcall(base, "/api/check", {"model": "dalle_shapes", "prompt": body["prompt"]})
            assert ok == 200 and words in checked["error"]
        assert wait_job(base, generate(base)[1]["job"])["status"] == "done"


def test_unknown_words_are_a_warning_not_an_error():
    with running() as (_, base):
        status, checked = jcall(base, "/api/check", {"model": "dalle_shapes", "prompt": "a red zebra"})
        assert status == 200 and checked["error"] is None and "zebra" in checked["warnings"][0]
        status, started = generate(base, prompt="a red zebra")
        assert status == 202 and "zebra" in started["warnings"][0]
        info = wait_job(base, started["job"])
        assert info["status"] == "done" and info["warnings"] == started["warnings"]  # not repeated


def test_malformed_requests_get_4xx():
    with running() as (server, base):
        assert call(base, "/api/generate", raw=b"{oops")[0] == 400
        assert call(base, "/api/generate", raw=b"[1, 2]")[0] == 400
        assert call(base, "/api/generate", raw=b"{}", headers={"Content-Type": "text/plain"})[0] == 415
        assert call(base, "/api/generate", raw=b" " * (70 * 1024))[0] == 413
        assert call(base, "/api/nothing", {"a": 1})[0] == 404
        assert call(base, "/api/jobs/feedbeef")[0] == 404
        assert call(base, "/", headers={"Host": "evil.example:80"})[0] == 403
        assert call(base, "/", headers={"Host": f"localhost:{server.server_address[1]}"})[0] == 200
        assert call(base, "/api/models")[0] == 200


def test_a_failing_generation_is_reported_on_its_job():
    pipe = FakePipeline(fail=RuntimeError("out of memory"))
    with running(pipe) as (_, base):
        info = wait_job(base, generate(base)[1]["job"])
        assert info["status"] == "error" and "out of memory" in info["error"]
        pipe.fail = ValueError("candidates (1) must be >= num_images (2)")
        info = wait_job(base, generate(base)[1]["job"])
        assert info["error"] == "candidates (1) must be >= num_images (2)"
        assert call(base, f"/api/jobs/{info['job']}/grid.png")[0] == 409
        pipe.fail = None
        assert wait_job(base, generate(base)[1]["job"])["status"] == "done"


def test_two_requests_at_once_are_queued_one_generation_at_a_time():
    gate = threading.Event()
    pipe = FakePipeline(gate=gate)
    with running(pipe) as (_, base):
        results = []
        threads = [threading.Thread(target=lambda i=i: results.append(generate(base, seed=i))) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert sorted(r[0] for r in results) == [202, 202, 202]
        jobs = [r[1]["job"] for r in results]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the worker has picked up one job; two wait
            states = [jcall(base, f"/api/jobs/{j}")[1] for j in jobs]
            if sorted(s["status"] for s in states) == ["queued", "queued", "running"]:
                break
            time.sleep(0.02)
        assert sorted(s["status"] for s in states) == ["queued", "queued", "running"], states
        assert sorted(s["position"] for s in states if s["status"] == "queued") == [1, 2]
        assert jcall(base, "/api/models")[0] == 200   # the page stays responsive meanwhile
        gate.set()
        assert [wait_job(base, j)["status"] for j in jobs] == ["done"] * 3
        assert pipe.max_running == 1


def test_cli_serve_flags_and_errors(capsys, tmp_path):
    args = build_parser().parse_args(["serve", "--port", "0", "--runs", str(tmp_path)])
    assert (args.host, args.port, args.runs) == ("127.0.0.1", 0, str(tmp_path))
    assert main(["serve", "--runs", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["serve", "--port", "70000"]) == 2


def test_cli_serve_starts_answers_and_stops_on_ctrl_c(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "config.json").write_text(json.dumps({"model_type": "dalle"}))
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    def as_from_a_terminal():
        # a child inherits the test process's SIGINT disposition, and a suite started in the
        # background by a non-interactive shell (`make test &`, nohup, a CI runner) has SIGINT
        # ignored (POSIX, for asynchronous commands); a terminal delivers Ctrl+C at its default
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    proc = subprocess.Popen([sys.executable, "-m", "mmgen.cli", "serve", "--port", "0", "--runs", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path,
                            preexec_fn=as_from_a_terminal)
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True)
    reader.start()
    try:
        first = lines.get(timeout=120)  # importing torch on a loaded machine can take a while
        assert first.startswith("mmgen serve: http://127.0.0.1:"), first
        base = first.split()[2].rstrip("/")
        status, data = jcall(base, "/api/models")
        assert status == 200 and [m["id"] for m in data["models"]][-1] == "runs/mine"
        assert call(base, "/")[0] == 200
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(10)
    rest = []
    while not lines.empty():
        rest.append(lines.get())
    assert any("stopped" in line for line in rest), rest


def test_the_server_uses_only_the_pipelines_public_api():
    """mmgen/web and the serve command import no model internals: only mmgen.pipelines'
    load_pipeline / make_grid (and mmgen.web itself)."""
    import ast

    files = sorted((REPO / "mmgen" / "web").glob("*.py")) + [REPO / "mmgen" / "commands" / "serve.py"]
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mmgen"):
                names = {a.name for a in node.names}
                assert node.module.startswith("mmgen.web") or (
                    node.module == "mmgen.pipelines" and names <= {"load_pipeline", "make_grid", "PipelineOutput"}), \
                    f"{path.name} imports {names} from {node.module}"
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith("mmgen") and not a.name.startswith("mmgen.web") for a in node.names), \
                    f"{path.name} imports {[a.name for a in node.names]}"


# ---- the real pipeline --------------------------------------------------------------------
HAS_PIPELINES = importlib.util.find_spec("mmgen.pipelines") is not None


@pytest.mark.skipif(not HAS_PIPELINES, reason="mmgen.pipelines (the generation pipelines) is not in this tree yet")
def test_real_dalle_shapes_through_load_pipeline():
    server = make_server("127.0.0.1", 0)  # the real load_pipeline and make_grid
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    base = server.url.rstrip("/")
    try:
        status, info = jcall(base, "/api/model?id=dalle_shapes")
        assert status == 200 and info["kind"] == "dalle" and "circle" in info["vocabulary"]
        status, err = generate(base, prompt="")
        assert status == 400
        status, err = generate(base, prompt="zebra unicorn")
        assert status == 400 and err["error"]
        status, started = generate(base, prompt="a red circle", num_images=2, seed=0, candidates=2)
        assert status == 202, started
        info = wait_job(base, started["job"], timeout=120)
        assert info["status"] == "done", info
        assert len(info["images"][0]) == 2 and info["seed"] == 0
        size = png_size(call(base, info["images"][0][1])[2])
        assert size == (info["image_size"], info["image_size"]) and size[0] >= 128
        gw, gh = png_size(call(base, info["grid"])[2])
        assert gw >= 2 * size[0] and gh >= size[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)

"""`mmgen serve`: a local page to generate images from prompts.

Python's standard library only (`http.server`), one static page with plain JS and CSS
shipped in the package: nothing is fetched from anywhere, so the page works offline. It
calls the generation pipelines (`mmgen.pipelines.load_pipeline`), never model internals.

    from mmgen.web import make_server
    server = make_server(port=8000, runs="runs")   # 127.0.0.1 by default
    server.serve_forever()
"""
from mmgen.web.server import SHIPPED_MODELS, Job, ModelChoice, WebServer, find_checkpoints, make_server

__all__ = ["SHIPPED_MODELS", "Job", "ModelChoice", "WebServer", "find_checkpoints", "make_server"]

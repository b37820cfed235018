"""The experts' workbench, `drawmatch serve`: browse drawings, compare models, review batch-search
candidates, annotate drawing-artwork pairs and export them for the next fine-tune.

Needs the `web` extra (FastAPI, uvicorn, Jinja2, python-multipart). `run(config)` loads the
in-memory indexes of an output root, then serves on `config.host:config.port` (127.0.0.1 unless
told otherwise).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from drawmatch.settings import ServeConfig


def run(config: ServeConfig) -> None:
    import uvicorn

    from drawmatch.serve.app import create_app
    from drawmatch.settings import save_config
    from drawmatch.storage import join

    app = create_app(config)
    save_config(config, join(config.out, "serve_config.yaml"))
    print(f"drawmatch serve: http://{config.host}:{config.port}/ (Ctrl-C stops it)")
    uvicorn.run(app, host=config.host, port=config.port, log_level=config.log_level)

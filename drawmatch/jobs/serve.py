"""The `serve` job: load the in-memory indexes of an output root and serve the experts' workbench
(`drawmatch.serve`) on `config.host:config.port` (127.0.0.1 unless told otherwise).

Needs the `web` extra (FastAPI, uvicorn, Jinja2, python-multipart).
"""

from __future__ import annotations

from drawmatch.serve.config import ServeConfig


def run(config: ServeConfig) -> None:
    import uvicorn

    from drawmatch.core.config import save_config
    from drawmatch.core.storage import join
    from drawmatch.serve.app import create_app

    app = create_app(config)
    save_config(config, join(config.out, "serve_config.yaml"))
    print(f"drawmatch serve: http://{config.host}:{config.port}/ (Ctrl-C stops it)")
    uvicorn.run(app, host=config.host, port=config.port, log_level=config.log_level)

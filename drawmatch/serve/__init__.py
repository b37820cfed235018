"""The experts' workbench, a web app: browse drawings and artworks, compare models, review
batch-search candidates, annotate drawing-artwork pairs and export them for the next fine-tune.
FastAPI with Jinja2 templates rendered on the server and a vendored htmx; `create_app(config)` in
`app` builds it, the `serve` job (`drawmatch.jobs.serve`) runs it under uvicorn. It reads what the
jobs wrote through the library layers and never imports a job.
"""

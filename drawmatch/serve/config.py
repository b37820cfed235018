"""The workbench's config (`drawmatch serve`): the serve job builds it, the web app reads it."""

from __future__ import annotations

from dataclasses import dataclass

from drawmatch.core.config import MIN_IMAGE_SIZE, Config, ConfigError, section, setting
from drawmatch.serve.hosts import WILDCARD_ADDRESSES, AllowedHosts, allowed_hosts
from drawmatch.serve.review_queue import ORDERS

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class ReviewSettings(Config):
    """The review queue. `order`: the order it offers first (likely: the highest calibrated
    confidence first; closest: the smallest distance first; uncertain: the confidence nearest 0.5
    first, or without a confidence the distance nearest the median distance of the known matches;
    null: likely where a model's candidates have a confidence, else closest; each can be chosen
    on the page). `double`: double review, each candidate shown to two different
    annotators who do not see each other's decision; their agreement (Cohen's kappa) and the
    disagreements to settle are on /review/agreement."""

    order: str | None = setting(
        None,
        choices=ORDERS,
        help="queue order shown first (null: likely if calibrated, else closest)",
    )
    double: bool = setting(False, help="show each candidate to two different annotators")


@dataclass(frozen=True)
class ServeConfig(Config):
    """The experts' workbench (`drawmatch serve`): a web app over one output root.

    `host` is 127.0.0.1 unless told otherwise; any other address is a shared deployment and
    needs `tokens_csv` (`annotator,token` lines): then annotators sign in with a token instead of
    typing a name. The workbench answers only requests that name it in `Host`: the loopback
    names and `host` (with or without `port`), and the names in `allowed_hosts` (`name` with any
    port, `name:port`); a wildcard `host` (0.0.0.0, ::) needs `allowed_hosts`. `model_tag`: the model a page shows first (default: the first one found).
    """

    out: str = setting("drawmatch-out", help="output root served")
    host: str = setting("127.0.0.1", help="address to listen on (not local: needs tokens_csv)")
    port: int = setting(8000, ge=0, le=65535, help="TCP port")
    allowed_hosts: tuple[str, ...] = setting(
        (), may_be_empty=True, help="more host names served (name or name:port): shared use"
    )
    model_tag: str | None = setting(None, help="model shown first (null: the first one found)")
    k: int = setting(12, ge=1, le=200, help="candidate artworks shown per drawing")
    page_size: int = setting(60, ge=1, le=500, help="images per page")
    tokens_csv: str | None = setting(None, help="annotator,token lines: sign-in by token")
    max_upload_bytes: int = setting(15_000_000, ge=1, help="largest uploaded query file")
    max_upload_pixels: int = setting(60_000_000, ge=1, help="largest uploaded query image")
    max_image_pixels: int = setting(200_000_000, ge=1, help="largest image opened")
    kept_upload_bytes: int = setting(
        100_000_000, ge=0, help="memory for uploads kept to search again under another model"
    )
    thumb_size: int = setting(256, ge=MIN_IMAGE_SIZE, le=4096, help="thumbnail side in px")
    view_size: int = setting(1024, ge=MIN_IMAGE_SIZE, le=4096, help="view-size side in px")
    load_model: bool = setting(True, help="load the embedding model (query uploads)")
    pairs_csv: tuple[str, ...] = setting(
        (), may_be_empty=True, help="known pairs files imported as matches (source imported)"
    )
    review: ReviewSettings = section(ReviewSettings)
    log_level: str = setting(
        "info", choices=("critical", "error", "warning", "info", "debug"), help="uvicorn log level"
    )

    def check(self) -> None:
        if self.host not in LOCAL_HOSTS and self.tokens_csv is None:
            raise ConfigError(
                f"host: serving on {self.host!r} is a shared deployment; give tokens_csv= "
                "(annotator,token lines) so that annotators sign in with a token"
            )
        if self.host.lower() in WILDCARD_ADDRESSES and not self.allowed_hosts:
            raise ConfigError(
                f"allowed_hosts: serving on every address ({self.host!r}) needs the host names "
                "annotators use, e.g. allowed_hosts=[workbench.example.org]"
            )
        try:
            self.hosts()
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if self.thumb_size > self.view_size:
            raise ConfigError(
                f"thumb_size: {self.thumb_size} must not exceed view_size ({self.view_size})"
            )

    def hosts(self) -> AllowedHosts:
        """The `Host` values the workbench answers to."""
        return allowed_hosts(self.host, self.port, self.allowed_hosts)

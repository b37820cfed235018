"""The static HTML report's building blocks: tables written as HTML and as text, the images
written beside the page, and the page itself.

HTML comes from the Jinja2 templates in `drawmatch/reporting/templates/`, autoescaped: every id,
title and artist taken from the data is escaped. The page opens from disk: its styles
(`shared.css`, which the workbench shares, and `report.css`) are inlined and nothing is fetched.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import re
from dataclasses import dataclass, field
from typing import Any

import jinja2
import pandas as pd
from markupsafe import Markup

from drawmatch.core import storage
from drawmatch.data import catalogue as cat
from drawmatch.reporting import insights, plots
from drawmatch.reporting.results import metric_keys
from drawmatch.reporting.sheets import thumbnail

IMAGES = "images"
FULL = "full"  # full-size images, under IMAGES
FULL_SIDE = 2048

TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("drawmatch.reporting", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def breakable(text: object) -> Markup:
    """`text` escaped, with a line-break opportunity (`<wbr>`) after each `_`, `-` and `/`: the
    page's styles never break a word, so an id wraps only at its separators."""
    escaped = str(Markup.escape(str(text)))
    return Markup(re.sub(r"([_/-])", r"\1<wbr>", escaped))


TEMPLATES.filters["breakable"] = breakable


def render(template: str, **context: Any) -> Markup:
    """One template of `drawmatch/reporting/templates` rendered with `context` (autoescaped)."""
    return Markup(TEMPLATES.get_template(template).render(**context))


def slug(text: str) -> str:
    """`text` as a safe HTML id or file name part."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "x"


# ----------------------------------------------------------------------------------------------
# tables: one definition, written as HTML and as text

Cell = str | tuple[str, Any]


def num(value: float, digits: int = 2) -> tuple[str, float]:
    """A number cell: `value` with `digits` decimals, and its exact value."""
    return (f"{value:.{digits}f}", float(value))


def integer(value: int | float) -> tuple[str, int]:
    """A count cell."""
    return (f"{int(value)}", int(value))


def mean_std(pair: tuple[float, float] | list[float]) -> tuple[str, list[float]]:
    """A `mean ± std` cell; its exact value is `[mean, std]`."""
    mean, std = float(pair[0]), float(pair[1])
    return (f"{mean:.2f} ± {std:.2f}", [mean, std])


@dataclass
class Table:
    """A table with a header row; a cell is text or (text, exact value) for numbers."""

    key: str
    title: str
    header: list[str]
    rows: list[list[Cell]] = field(default_factory=list)
    note: str = ""

    @property
    def anchor(self) -> str:
        return f"table-{slug(self.key)}"

    def cells(self) -> list[list[tuple[str, str | None]]]:
        """Each row's cells as (text, exact value as the page's `data-value`, or None)."""
        return [
            [(c[0], repr(c[1])) if isinstance(c, tuple) else (str(c), None) for c in row]
            for row in self.rows
        ]

    def text(self) -> str:
        cells = [[text for text, _value in row] for row in self.cells()]
        widths = [len(h) for h in self.header]
        for row in cells:
            widths = [max(w, len(c)) for w, c in zip(widths, row)]
        line = "  ".join(h.ljust(w) for h, w in zip(self.header, widths))
        lines = [self.title, line, "-" * len(line)]
        lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
        if self.note:
            lines.append(self.note)
        return "\n".join(lines)


def mean_std_table(key: str, title: str, columns: dict[str, dict[str, Any]]) -> Table:
    """Metrics (rows, in `metric_keys` order of the first column) x columns of `[mean, std]`."""
    names = list(columns)
    table = Table(key, title, ["metric", *names])
    for k in metric_keys(columns[names[0]]) if names else []:
        table.rows.append(
            [k, *[mean_std(columns[n][k]) if k in columns[n] else "–" for n in names]]
        )
    return table


# ----------------------------------------------------------------------------------------------
# images


@dataclass
class Tile:
    """A thumbnail over its caption lines, linking to the full image (`href`, if any); `frame`:
    "query" (the drawing), "annotated" or ""."""

    src: str
    id: str
    lines: list[str]
    frame: str = ""
    href: str = ""


class Images:
    """Thumbnails and figures written under `output/images`, referenced relatively from HTML.
    Refuses any verso: a verso id can never become an image of the report."""

    def __init__(self, out: str, output: str, catalogue: pd.DataFrame, size: int) -> None:
        self.dir = storage.join(output, IMAGES)
        storage.makedirs(self.dir)
        self.size = size
        roots = cat.read_roots(out)
        self.paths = dict(zip(catalogue["id"], cat.resolve_paths(catalogue, roots)))
        self.hidden = set(catalogue.loc[insights.is_verso(catalogue), "id"])
        self.written: dict[str, str] = {}
        self.full_written: dict[str, str] = {}
        storage.makedirs(storage.join(self.dir, FULL))

    def thumb(self, image_id: str) -> str:
        """Relative path of the thumbnail of catalogue image `image_id` (written once)."""
        if image_id in self.hidden:
            raise ValueError(f"a verso can not be shown: {image_id}")
        if image_id not in self.written:
            digest = hashlib.sha1(image_id.encode()).hexdigest()[:8]
            name = f"{slug(image_id)[:60]}-{digest}.jpg"
            img = thumbnail(self.paths[image_id], self.size)
            buffer = io.BytesIO()
            img.save(buffer, format="JPEG", quality=85)
            storage.write_bytes(storage.join(self.dir, name), buffer.getvalue())
            self.written[image_id] = f"{IMAGES}/{name}"
        return self.written[image_id]

    def full(self, image_id: str) -> str:
        """Relative path of catalogue image `image_id` at full size (longest side at most
        `FULL_SIDE` px) as a JPEG any browser shows, written once under `images/full/`."""
        if image_id in self.hidden:
            raise ValueError(f"a verso can not be shown: {image_id}")
        if image_id not in self.full_written:
            digest = hashlib.sha1(image_id.encode()).hexdigest()[:8]
            name = f"{FULL}/{slug(image_id)[:60]}-{digest}.jpg"
            img = thumbnail(self.paths[image_id], FULL_SIDE, upscale=False)
            buffer = io.BytesIO()
            img.save(buffer, format="JPEG", quality=90)
            storage.write_bytes(storage.join(self.dir, name), buffer.getvalue())
            self.full_written[image_id] = f"{IMAGES}/{name}"
        return self.full_written[image_id]

    def tile(self, image_id: str, lines: list[str], frame: str = "") -> Tile:
        """The tile of catalogue image `image_id` (its thumbnail and full image written once)."""
        return Tile(self.thumb(image_id), image_id, lines, frame, self.full(image_id))

    def figure(self, name: str, fig: Any) -> str:
        """Relative path of the matplotlib figure `fig`, written as `name.png`."""
        storage.write_bytes(storage.join(self.dir, f"{name}.png"), plots.png(fig))
        return f"{IMAGES}/{name}.png"


# ----------------------------------------------------------------------------------------------
# the page


@dataclass
class Section:
    """A part of the page: its anchor, its heading and its rendered body."""

    key: str
    title: str
    body: Markup


def render_page(title: str, out: str, sections: list[Section], files: dict[str, str]) -> str:
    """The whole page: `sections` under a navigation bar; `files` names the page's companions
    (`json`: the numbers, `text`: the tables as text)."""
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return str(render("report.html", title=title, out=out, when=when, sections=sections, **files))

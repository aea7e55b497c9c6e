"""The Jinja2 environment of the dashboard (autoescape on, for every template) and its filters."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

HERE = Path(__file__).parent


def when(value: datetime | str | None) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return value.strftime("%Y-%m-%d %H:%M:%S")


def http_url(value: str | None) -> str | None:
    """Only http(s) links are rendered as links: a ``javascript:`` URL in a document's metadata
    must not become clickable script (autoescaping does not help inside ``href``)."""
    if value and urlsplit(value).scheme in ("http", "https"):
        return value
    return None


def percent(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.0f} %"


env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=True,  # every template, whatever its extension
    undefined=jinja2.StrictUndefined,
)


def every(seconds: float) -> str:
    """A period as people write it: ``30s``, ``5m``, ``1h``, ``1.5h``, ``2d``."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.3g}{unit}"
    return f"{seconds:.3g}s"


env.filters.update(when=when, http_url=http_url, percent=percent, every=every)
templates = Jinja2Templates(env=env)


def render(request: Request, name: str, context: dict[str, Any], status_code: int = 200) -> HTMLResponse:
    return templates.TemplateResponse(request, name, context, status_code=status_code)

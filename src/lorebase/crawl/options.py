"""The ``crawl`` options of a web source (DESIGN.md §7), validated once when the source is added."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lorebase.errors import InvalidInput


class CrawlOptions(BaseModel):
    """What a web source crawls. Defaults are those of DESIGN.md §7."""

    model_config = ConfigDict(extra="forbid")

    max_pages: int = Field(100, ge=1, le=100_000, description="pages fetched at most per crawl")
    max_depth: int = Field(3, ge=0, le=100, description="links followed from the start URL")
    include: list[str] = Field(default_factory=list, description="URL path globs a page must match")
    exclude: list[str] = Field(default_factory=list, description="URL path globs that rule a page out")
    same_domain: bool = Field(True, description="stay on the start URL's host")
    use_sitemap: bool = Field(True, description="seed the frontier from robots.txt sitemaps / sitemap.xml")
    respect_robots: bool = Field(True, description="obey robots.txt rules and its Crawl-delay")
    concurrency: int = Field(4, ge=1, le=32, description="requests in flight per host")
    delay_seconds: float = Field(
        0.0, ge=0, le=60, description="pause between requests to one host (robots Crawl-delay wins if larger)"
    )
    engine: Literal["builtin", "firecrawl"] = Field(
        "builtin", description="`firecrawl` hands the crawl to a Firecrawl API (sites that need JavaScript)"
    )


def parse_options(raw: dict[str, Any] | None) -> CrawlOptions:
    try:
        return CrawlOptions.model_validate(raw or {})
    except ValidationError as exc:
        problems = "; ".join(
            f"crawl.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise InvalidInput(f"invalid crawl options: {problems}") from None

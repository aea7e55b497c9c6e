"""One page fetched on request (a draft's chunk preview), through the same guard as the crawler."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from .fetch import Fetcher, FetchResult, HostGate
from .guard import AddressPolicy, guarded_client

if TYPE_CHECKING:
    from lorebase.runtime import Runtime

PREVIEW_TIMEOUT_SECONDS = 15.0


def fetch_one(runtime: Runtime, url: str) -> FetchResult:
    settings = runtime.settings.crawl
    policy = AddressPolicy.from_settings(settings.allow_private_networks, settings.allowed_hosts)
    timeout = min(settings.request_timeout_seconds, PREVIEW_TIMEOUT_SECONDS)

    async def go() -> FetchResult:
        gate = HostGate(1, 0.0)
        async with guarded_client(policy, user_agent=settings.user_agent, timeout=timeout) as client:
            fetcher = Fetcher(
                client,
                policy,
                gate=lambda _host: gate,
                robots=None,  # one page a person asked to see, as a browser would
                scope=lambda _url: None,
                max_bytes=settings.max_page_bytes,
                timeout=timeout,
            )
            return await fetcher.fetch(url)

    return asyncio.run(go())

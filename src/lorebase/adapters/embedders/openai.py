"""``openai:<model>``: any server speaking the OpenAI embeddings API (OpenAI, Azure-style
proxies, vLLM, Ollama, Hugging Face TEI, Infinity), over httpx.

``POST {base_url}/embeddings`` with ``{"model", "input": [...], "encoding_format": "float"}``,
in requests cut by count (``openai_batch_size``) and by tokens (``openai_batch_tokens``), each
taking its share of the endpoint's budgets first (``budget.py``, shared by all workers).

**Errors.** 408, 409, 429 and 5xx, timeouts and connection errors are ``TransientError``
carrying the server's ``Retry-After`` (seconds or an HTTP date): the job's retry
(``jobs/retry.py``, the one place retry is decided) waits at least that long. Other 4xx (400,
401, 403, 404, 422) are ``PermanentError`` with the provider's own message: retrying a bad key
or an unknown model cannot help. Nothing here retries by itself.

**Dimensions.** Unknown until the endpoint answers: a KB records the dimension in its config
(``embedding.dimensions``, stated by the user or probed when its draft is validated), and an
embedder built with it refuses any other (``PermanentError``: the model behind the name
changed, and its vectors cannot share an index with the old ones). Without one it learns the
dimension from the first answer and holds it from then on.

**Cache key.** ``model_id`` names the endpoint and the model, so two endpoints serving models
of the same name never share cached vectors.

**Tokens.** Counted with a local ``tokenizer.json`` (``openai_tokenizer``) or, by default, the
bundled MiniLM tokenizer: an approximation of the model's own count, used for chunk sizes and
budgets. Nothing is downloaded.
"""

from __future__ import annotations

import email.utils
import hashlib
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
from tokenizers import Tokenizer

from lorebase.adapters.embedders.budget import Budget
from lorebase.adapters.embedders.local import load_tokenizer
from lorebase.errors import PermanentError, TransientError
from lorebase.metrics import EMBED_BATCH, EMBEDDED_TEXTS

log = logging.getLogger("lorebase.embedders")

PREFIX = "openai:"
#: the tokenizer that approximates an ``openai:`` model's count when none is named
APPROXIMATE_TOKENIZER = "all-MiniLM-L6-v2"
#: statuses worth retrying (the rest of 4xx are the request's fault)
TRANSIENT_STATUSES = frozenset({408, 409, 425, 429})
#: the text embedded to learn an endpoint's dimension
PROBE_TEXT = "dimension probe"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where an ``openai:`` model is served, and how requests to it are cut and limited."""

    base_url: str
    api_key: str | None = None
    timeout: float = 60.0
    batch_size: int = 64
    batch_tokens: int = 8192
    budget: Budget | None = None

    @property
    def url(self) -> str:
        return self.base_url.rstrip("/")

    @property
    def shown(self) -> str:
        """The URL as messages, metrics and the cache key show it: without a ``user:password@``."""
        return shown_url(self.base_url)


def shown_url(url: str) -> str:
    parts = urlsplit(url.rstrip("/"))
    if parts.username is None and parts.password is None:
        return parts.geturl()
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    return parts._replace(netloc=netloc).geturl()


def model_id_of(model: str, base_url: str) -> str:
    """The cache key's model part: ``openai:<model>@<endpoint>`` (hashed when it would not fit
    the cache's 200-character column)."""
    mid = f"{PREFIX}{model}@{shown_url(base_url)}"
    if len(mid) <= 200:
        return mid
    digest = hashlib.sha256(shown_url(base_url).encode()).hexdigest()[:32]
    return f"{PREFIX}{model[:150]}@sha256:{digest}"


@cache
def file_tokenizer(path: str) -> Tokenizer:
    tok = Tokenizer.from_file(path)
    tok.no_padding()
    tok.no_truncation()
    return tok


def retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header: delta-seconds or an HTTP date; None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def provider_message(response: httpx.Response) -> str:
    """The provider's own words: OpenAI's ``{"error": {"message"}}``, TEI/Ollama's
    ``{"error": "..."}``, FastAPI's ``{"detail"}``, else the body's start."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:500] or response.reason_phrase
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(err, str):
            return err
        if body.get("detail"):
            return str(body["detail"])
        if body.get("message"):
            return str(body["message"])
    return str(body)[:500]


class OpenAIEmbedder:
    """An OpenAI-compatible endpoint as an ``Embedder``."""

    def __init__(
        self,
        model: str,
        endpoint: Endpoint,
        *,
        dimensions: int | None = None,
        max_tokens: int = 8191,
        tokenizer_path: Path | None = None,
        slot: str = "ingest",
    ) -> None:
        self.model = model
        self.endpoint = endpoint
        self.model_id = model_id_of(model, endpoint.base_url)
        self.max_tokens = max_tokens
        self.slot = slot
        self._dimensions = dimensions
        self._tokenizer_path = tokenizer_path
        self._lock = threading.Lock()
        headers = {"Authorization": f"Bearer {endpoint.api_key}"} if endpoint.api_key else {}
        self._client = httpx.Client(timeout=endpoint.timeout, headers=headers)

    @property
    def dimensions(self) -> int:
        """The vectors' dimension: as recorded, or learnt from the endpoint (one probe call)."""
        if self._dimensions is None:
            self.embed([PROBE_TEXT])
        assert self._dimensions is not None
        return self._dimensions

    def tokenizer(self) -> Tokenizer:
        if self._tokenizer_path is not None:
            return file_tokenizer(str(self._tokenizer_path))
        return load_tokenizer(APPROXIMATE_TOKENIZER)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self._dimensions or 0), dtype=np.float32)
        texts = list(texts)
        counts = [len(e.ids) for e in self.tokenizer().encode_batch(texts)]
        out: list[np.ndarray] = []
        for batch in self._batches(counts):
            out.append(self._request([texts[i] for i in batch], sum(counts[i] for i in batch)))
        return np.concatenate(out)

    def _batches(self, counts: list[int]) -> list[list[int]]:
        """Consecutive texts, at most ``batch_size`` and ``batch_tokens`` (a longer text alone)."""
        batches: list[list[int]] = []
        tokens = 0
        for i, n in enumerate(counts):
            if (
                batches
                and len(batches[-1]) < self.endpoint.batch_size
                and tokens + n <= self.endpoint.batch_tokens
            ):
                batches[-1].append(i)
                tokens += n
            else:
                batches.append([i])
                tokens = n
        return batches

    def _request(self, texts: list[str], tokens: int) -> np.ndarray:
        url = f"{self.endpoint.url}/embeddings"
        if self.endpoint.budget is not None:
            self.endpoint.budget.acquire(self.endpoint.shown, tokens)
        started = time.perf_counter()
        try:
            response = self._client.post(
                url, json={"model": self.model, "input": texts, "encoding_format": "float"}
            )
        except httpx.TimeoutException:
            raise TransientError(f"embedding endpoint {self.endpoint.shown} timed out") from None
        except httpx.HTTPError as exc:
            raise TransientError(f"embedding endpoint {self.endpoint.shown} unreachable: {exc}") from None
        if response.status_code != 200:
            raise self._error(response)
        vectors = self._vectors(response, len(texts))
        EMBED_BATCH.labels(self.model_id, self.slot).observe(time.perf_counter() - started)
        EMBEDDED_TEXTS.labels(self.model_id, self.slot).inc(len(texts))
        return vectors

    def _error(self, response: httpx.Response) -> Exception:
        status = response.status_code
        said = provider_message(response)
        where = f"{self.endpoint.shown} ({self.model})"
        if status in TRANSIENT_STATUSES or status >= 500:
            wait = retry_after(response.headers.get("Retry-After"))
            return TransientError(f"embedding endpoint {where} answered {status}: {said}", retry_after=wait)
        return PermanentError(f"embedding endpoint {where} answered {status}: {said}")

    def _vectors(self, response: httpx.Response, n: int) -> np.ndarray:
        try:
            data: list[dict[str, Any]] = response.json()["data"]
            rows = sorted(data, key=lambda d: int(d.get("index", 0)))
            vectors = np.asarray([r["embedding"] for r in rows], dtype=np.float32)
        except (ValueError, KeyError, TypeError) as exc:
            raise PermanentError(
                f"embedding endpoint {self.endpoint.shown} answered something that is not an "
                f"embeddings list (encoding_format=float): {exc}"
            ) from None
        if vectors.ndim != 2 or vectors.shape[0] != n:
            raise PermanentError(
                f"embedding endpoint {self.endpoint.shown} answered {vectors.shape[0]} vectors for {n} texts"
            )
        self._check_dimensions(vectors.shape[1])
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.where(norms == 0, 1.0, norms)

    def _check_dimensions(self, dims: int) -> None:
        with self._lock:
            if self._dimensions is None:
                self._dimensions = dims
                log.info("%s answers %d-dimensional vectors", self.model_id, dims)
                return
        if dims != self._dimensions:
            raise PermanentError(
                f"embedding endpoint {self.endpoint.shown} now answers {dims}-dimensional vectors for "
                f"{self.model}, and this knowledge base's vectors have {self._dimensions}: the model "
                "behind that name changed. Its vectors cannot share an index with the old ones: "
                "create a new version of the knowledge base with the new model (or restore the old one)"
            )

"""Embedder contract.

An embedder turns texts into L2-normalised float32 vectors of a fixed dimension and counts
tokens the way its model does, so that chunk sizes are measured in the model's own tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
from tokenizers import Tokenizer


@runtime_checkable
class Embedder(Protocol):
    #: stable identifier, part of the embedding cache key (e.g. "local:all-MiniLM-L6-v2")
    model_id: str

    @property
    def dimensions(self) -> int:
        """The vectors' dimension (a remote model's may cost one call to learn, then is fixed)."""
        ...

    #: the most tokens the model reads; longer inputs are truncated by the model
    max_tokens: int

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Return an array of shape (len(texts), dimensions), float32, rows of unit length.

        Raises ``TransientError`` for failures worth retrying (remote endpoint down, 429/5xx).
        """
        ...

    def tokenizer(self) -> Tokenizer:
        """A HuggingFace ``tokenizers.Tokenizer`` with padding and truncation switched off."""
        ...

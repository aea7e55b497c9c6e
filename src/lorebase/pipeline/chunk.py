"""Chunk stage: a parsed document into token-sized chunks ready for embedding.

Sizes are counted with the embedding model's own tokenizer (``add_special_tokens=False``),
because a chunk the model silently truncates is a chunk whose tail can never be found.
Every chunk's ``token_count`` is the real count of its final text and never exceeds the
effective size ``min(cfg.chunk_size, max_tokens)``: packing works on per-block counts, and a
final re-count of all chunks in one batch catches tokenizers whose counts are not additive
over ``"\\n\\n"`` joins (such a chunk is split again).

Structure comes first: whole blocks are packed together, and only a block larger than a chunk
is cut, by ``semantic_text_splitter`` at paragraph, sentence and word boundaries. Overlap is
the tail of the previous chunk (cut at a sentence or word start) carried into the next one;
``page``/``pages`` describe the chunk's own text, not that carried-over tail.

Two strategies:

* ``recursive`` packs across headings and pages; ``section`` is that of the chunk's first block;
* ``structure`` starts a new chunk at every heading (consecutive headings stay together), puts
  the heading line first, and never overlaps across sections.

Cost: the blocks are tokenized in one ``encode_batch`` call, split pieces in a second and the
final chunks in a third; tails are cut using token offsets, with no re-tokenization.
"""

from __future__ import annotations

import re
import threading
from bisect import bisect_left
from dataclasses import dataclass, replace
from typing import Any

from semantic_text_splitter import TextSplitter
from tokenizers import Tokenizer

from lorebase.pipeline.types import Block, ChunkDraft, ChunkingConfig, ParsedDocument

_SPACE = re.compile(r"\s+")
_SENTENCE_END = re.compile(r"[.!?;:\u3002\uff01\uff1f]['\")\]]*\s+|\n+")


def count_tokens(tokenizer: Tokenizer, texts: list[str]) -> list[int]:
    """Token counts without special tokens, in one batch call."""
    if not texts:
        return []
    return [len(e.ids) for e in tokenizer.encode_batch(texts, add_special_tokens=False)]


_SPLITTERS: dict[tuple[int, int], tuple[Tokenizer, TextSplitter]] = {}
_SPLITTERS_LOCK = threading.Lock()


def _shared_splitter(tokenizer: Tokenizer, capacity: int) -> TextSplitter:
    """One splitter per (tokenizer, capacity) for the process: building one copies the whole
    tokenizer (~15% of a crawl's CPU when it was built per document)."""
    key = (id(tokenizer), capacity)
    with _SPLITTERS_LOCK:
        found = _SPLITTERS.get(key)
        if found is None or found[0] is not tokenizer:  # the tokenizer is kept alive with it
            found = _SPLITTERS[key] = (
                tokenizer,
                TextSplitter.from_huggingface_tokenizer(tokenizer, capacity),
            )
        return found[1]


@dataclass(frozen=True, slots=True)
class _Piece:
    """A unit of packing: a whole block, or a part of an oversize block, or an overlap tail."""

    text: str
    tokens: int
    starts: tuple[int, ...]  # start char offset of every token in ``text``
    page: int | None
    section: tuple[str, ...]
    anchor: str | None
    heading: bool = False
    tail: bool = False


class _Chunker:
    def __init__(self, cfg: ChunkingConfig, tokenizer: Tokenizer, max_tokens: int) -> None:
        self.size = min(cfg.chunk_size, max_tokens)
        if self.size < 1:
            raise ValueError(f"chunk size must be at least 1 token (got {self.size})")
        self.overlap = max(0, min(cfg.chunk_overlap, (self.size - 1) // 2))
        self.tokenizer = tokenizer
        self.strategy = cfg.strategy

    # -- pieces --------------------------------------------------------------------------------

    def _encode(self, texts: list[str]) -> list[tuple[int, tuple[int, ...]]]:
        if not texts:
            return []
        encodings = self.tokenizer.encode_batch(texts, add_special_tokens=False)
        return [(len(e.ids), tuple(start for start, _ in e.offsets)) for e in encodings]

    def _splitter(self, capacity: int) -> TextSplitter:
        return _shared_splitter(self.tokenizer, capacity)

    def pieces(self, blocks: list[Block]) -> list[_Piece]:
        """Blocks with their section path, cut into pieces no larger than a chunk."""
        stack: list[tuple[int, str, str | None]] = []
        located: list[tuple[Block, str, tuple[str, ...], str | None]] = []
        for block in blocks:
            text = block.text.strip()
            if not text:
                continue
            if block.kind == "heading":
                level = block.level or 1
                while stack and stack[-1][0] >= level:
                    stack.pop()
                stack.append((level, text.replace("\n", " "), block.anchor))
            anchor = next((a for _, _, a in reversed(stack) if a), None)
            located.append((block, text, tuple(t for _, t, _ in stack), anchor))

        encoded = self._encode([text for _, text, _, _ in located])
        groups: list[list[_Piece]] = []  # one group per block; several pieces for a cut block
        to_cut: list[tuple[int, _Piece, list[str]]] = []
        headings_before = 0  # tokens of the headings right before this block
        for (block, text, section, anchor), (tokens, starts) in zip(located, encoded, strict=True):
            piece = _Piece(text, tokens, starts, block.page, section, anchor, block.kind == "heading")
            # Room kept for the headings that open the chunk, so a heading is never left alone.
            reserve = min(headings_before, self.size // 2)
            headings_before = headings_before + tokens if piece.heading else 0
            if tokens <= self.size - reserve:
                groups.append([piece])
                continue
            # Cut so that a part plus an overlap tail (or the headings) still fits a chunk.
            capacity = self.size - max(self.overlap, reserve)
            parts = [p.strip() for p in self._splitter(capacity).chunks(text) if p.strip()]
            to_cut.append((len(groups), piece, parts))
            groups.append([])
        encoded_parts = self._encode([part for _, _, parts in to_cut for part in parts])
        position = 0
        for index, piece, parts in to_cut:
            counted = encoded_parts[position : position + len(parts)]
            position += len(parts)
            groups[index] = [
                replace(piece, text=part, tokens=tokens, starts=starts)
                for part, (tokens, starts) in zip(parts, counted, strict=True)
            ]
        return [piece for group in groups for piece in group]

    # -- overlap -------------------------------------------------------------------------------

    def _suffix(self, piece: _Piece, budget: int, *, sentence_only: bool) -> _Piece | None:
        """The end of ``piece`` with at most ``budget`` tokens, starting at a sentence or word.

        A sentence start is preferred when it keeps at least half the budget. ``sentence_only``
        (when whole pieces were already taken) refuses a word-level cut: a few words torn from
        the middle of a sentence or a code line only add noise.
        """
        if budget <= 0 or len(piece.starts) <= budget:
            return None
        text, starts = piece.text, piece.starts
        lowest = starts[len(starts) - budget]  # no cut may start before this character
        sentence = next(
            (m.end() for m in _SENTENCE_END.finditer(text, max(0, lowest - 4)) if m.end() >= lowest), None
        )
        if sentence is not None and sentence >= len(text):
            sentence = None
        if sentence_only or (
            sentence is not None and len(starts) - bisect_left(starts, sentence) >= budget // 2
        ):
            if sentence is None:
                return None
            cut = sentence
        elif lowest > 0 and not text[lowest - 1].isspace():  # mid-word: move to the next word
            space = _SPACE.search(text, lowest)
            if space is None:
                return None
            cut = space.end()
        else:
            cut = lowest
        first = bisect_left(starts, cut)
        tokens = len(starts) - first
        if tokens <= 0 or not text[cut:].strip():
            return None
        shifted = tuple(start - cut for start in starts[first:])
        return replace(piece, text=text[cut:], tokens=tokens, starts=shifted, heading=False, tail=True)

    def _tail(self, previous: list[_Piece], budget: int) -> list[_Piece]:
        budget = min(budget, self.overlap)
        taken: list[_Piece] = []
        used = 0
        for piece in reversed(previous):
            if used + piece.tokens <= budget:
                taken.append(replace(piece, heading=False, tail=True))
                used += piece.tokens
                continue
            part = self._suffix(piece, budget - used, sentence_only=bool(taken))
            if part is not None:
                taken.append(part)
            break
        return taken[::-1]

    # -- packing -------------------------------------------------------------------------------

    def pack(self, pieces: list[_Piece]) -> list[list[_Piece]]:
        """Greedy packing of one run of pieces, with overlap tails between chunks."""
        chunks: list[list[_Piece]] = []
        current: list[_Piece] = []
        used = 0
        for piece in pieces:
            if current and used + piece.tokens > self.size:
                # Headings at the end of a full chunk belong to what follows them.
                carried: list[_Piece] = []
                while current and current[-1].heading and len(current) > 1:
                    carried.insert(0, current.pop())
                carried_tokens = sum(p.tokens for p in carried)
                if carried_tokens + piece.tokens > self.size:
                    current.extend(carried)
                    carried, carried_tokens = [], 0
                chunks.append(current)
                head = carried or self._tail(current, self.size - piece.tokens)
                current = list(head)
                used = sum(p.tokens for p in current)
            current.append(piece)
            used += piece.tokens
        if current:
            chunks.append(current)
        return chunks

    def sections(self, pieces: list[_Piece]) -> list[list[_Piece]]:
        """Runs of pieces that start at a heading; a run of headings alone joins the next."""
        runs: list[list[_Piece]] = []
        only_headings = False
        for piece in pieces:
            if runs and (only_headings or not piece.heading):
                runs[-1].append(piece)
                only_headings = only_headings and piece.heading
            else:
                runs.append([piece])
                only_headings = piece.heading
        return runs

    # -- drafts --------------------------------------------------------------------------------

    def drafts(self, packed: list[list[_Piece]]) -> list[ChunkDraft]:
        texts: list[str] = []
        metas: list[dict[str, Any]] = []
        for group in packed:
            text = "\n\n".join(p.text for p in group).strip()
            if not text:
                continue
            own = [p for p in group if not p.tail] or group
            ref = own[-1] if self.strategy == "structure" else own[0]
            meta: dict[str, Any] = {"section": list(ref.section)}
            if ref.anchor:
                meta["anchor"] = ref.anchor
            pages = sorted({p.page for p in own if p.page is not None})
            if pages:
                meta["page"] = pages[0]
                meta["pages"] = pages
            texts.append(text)
            metas.append(meta)
        out: list[ChunkDraft] = []
        for text, meta, tokens in zip(texts, metas, count_tokens(self.tokenizer, texts), strict=True):
            if tokens <= self.size:
                out.append(ChunkDraft(text=text, token_count=tokens, metadata=meta))
                continue
            # Non-additive tokenizer: the joined text came out larger; cut it once more.
            parts = [p.strip() for p in self._splitter(self.size).chunks(text) if p.strip()]
            for part, count in zip(parts, count_tokens(self.tokenizer, parts), strict=True):
                out.append(ChunkDraft(text=part, token_count=count, metadata=dict(meta)))
        return out


def chunk(
    doc: ParsedDocument, cfg: ChunkingConfig, tokenizer: Tokenizer, *, max_tokens: int
) -> list[ChunkDraft]:
    """Cut ``doc`` into chunks of at most ``min(cfg.chunk_size, max_tokens)`` tokens, in order."""
    chunker = _Chunker(cfg, tokenizer, max_tokens)
    pieces = chunker.pieces(doc.blocks)
    if not pieces:
        return []
    if cfg.strategy == "structure":
        packed = [group for run in chunker.sections(pieces) for group in chunker.pack(run)]
    else:
        packed = chunker.pack(pieces)
    return chunker.drafts(packed)

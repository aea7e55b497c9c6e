"""Chunk stage: a parsed document into token-sized chunks ready for embedding.

Sizes are counted with the embedding model's own tokenizer (``add_special_tokens=False``),
because a chunk the model silently truncates is a chunk whose tail can never be found.
Every chunk's ``token_count`` is the real count of its final text and never exceeds the
effective size ``min(cfg.chunk_size, max_tokens)``.

Structure comes first: whole blocks are packed together, and only a block larger than a chunk
is cut, at the last paragraph break, line break, sentence end or (failing those) word boundary
that fits, found with the token offsets of the one ``encode_batch`` call over all blocks.
Overlap is the tail of the previous chunk (cut at a sentence or word start) carried into the
next one; ``page``/``pages`` describe the chunk's own text, not that carried-over tail.

Tables whose header is known (``Block.header_rows``: spreadsheets and CSV) are cut between rows
only, every part opening with the header row, and such a part neither shares a chunk with the
part before it nor gets an overlap tail (its header is its context). Other tables are cut like
text (their first row need not be a header). Every chunk's ``metadata.type`` is ``table``,
``code``, ``ocr`` (read from an image by OCR; the chunk also gets ``ocr_confidence``) or
``text``: the kind of the blocks holding most of its own tokens, headings aside.

Two strategies:

* ``recursive`` packs across headings and pages; ``section`` is that of the chunk's first block;
* ``structure`` starts a new chunk at every heading (consecutive headings stay together), puts
  the heading line first, and never overlaps across sections.

Cost: one tokenizer pass. Cutting here by hand rather than with ``semantic_text_splitter``
is the point: that library re-tokenizes candidate chunks while it searches for split points,
and with a re-count of the final chunks it made chunking ~5x the cost of parsing a page. For
*additive* tokenizers -- those that split on whitespace before anything else (BERT's WordPiece,
``Whitespace``/``WhitespaceSplit`` pre-tokenizers), so that the tokens of ``a + " " + b`` are the
tokens of ``a`` followed by those of ``b`` -- a part cut at whitespace, a tail and a
``"\\n\\n"``-joined chunk are counted from the offsets already known. Anything else (a byte-level
BPE, a cut in the middle of a word) is re-encoded, in one batch per round, and cut again if the
real count came out larger.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, replace
from itertools import pairwise
from operator import itemgetter
from typing import Any

from tokenizers import Tokenizer, pre_tokenizers

from lorebase.adapters.parsers.document import Block, ParsedDocument
from lorebase.pipeline.types import ChunkDraft, ChunkingConfig

_first = itemgetter(0)
_SPACE = re.compile(r"\s+")
_SENTENCE_END = re.compile(r"[.!?;:\u3002\uff01\uff1f]['\")\]]*\s+|\n+")
#: where an oversize block may be cut, best first (each match ends where the next part starts)
_PARAGRAPH_BREAK = re.compile(r"\n[^\S\n]*\n\s*")
_LINE_BREAK = re.compile(r"\n\s*")
_SENTENCE_BREAK = re.compile(r"[.!?;:\u3002\uff01\uff1f]['\")\]]*\s+")
_ADDITIVE_PRE_TOKENIZERS = (
    pre_tokenizers.BertPreTokenizer,
    pre_tokenizers.Whitespace,
    pre_tokenizers.WhitespaceSplit,
)

#: a text with its token count and the start offset of every token in it
_Encoded = tuple[str, int, tuple[int, ...]]


def count_tokens(tokenizer: Tokenizer, texts: list[str]) -> list[int]:
    """Token counts without special tokens, in one batch call."""
    if not texts:
        return []
    return [len(e.ids) for e in tokenizer.encode_batch(texts, add_special_tokens=False)]


def is_additive(tokenizer: Tokenizer) -> bool:
    """Whether token counts add up over texts joined or cut at whitespace (see the module doc)."""
    return isinstance(tokenizer.pre_tokenizer, _ADDITIVE_PRE_TOKENIZERS)


def _last_break(pattern: re.Pattern[str], text: str, floor: int, end: int) -> int | None:
    """The end of the last match of ``pattern`` in ``text[:end]`` that ends after ``floor``."""
    found = None
    for match in pattern.finditer(text, max(0, floor - 8), end):
        if match.end() > floor:
            found = match.end()
    return found


def _cut_point(text: str, begin: int, floor: int, end: int) -> tuple[int, bool]:
    """Where to end a part that starts at ``begin`` and must end by ``end``: the last paragraph
    break, line break or sentence end past ``floor`` (half the room), else the last word
    boundary. Returns the position and whether it is at whitespace (a clean cut)."""
    for pattern in (_PARAGRAPH_BREAK, _LINE_BREAK, _SENTENCE_BREAK):
        found = _last_break(pattern, text, floor, end)
        if found is not None:
            return found, True
    found = _last_break(_SPACE, text, begin, end)
    if found is not None:
        return found, True
    return end, False  # one "word" longer than the room: cut between two tokens


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
    kind: str = "paragraph"  # the block's kind (``Block.kind``)
    header_rows: int = 0  # a table's header lines, repeated atop each part it is cut into
    confidence: float | None = None  # an OCR block's page confidence


class _Chunker:
    def __init__(self, cfg: ChunkingConfig, tokenizer: Tokenizer, max_tokens: int) -> None:
        self.size = min(cfg.chunk_size, max_tokens)
        if self.size < 1:
            raise ValueError(f"chunk size must be at least 1 token (got {self.size})")
        self.overlap = max(0, min(cfg.chunk_overlap, (self.size - 1) // 2))
        self.tokenizer = tokenizer
        self.additive = is_additive(tokenizer)
        # what joining costs a tokenizer whose counts do not add up (0 for an additive one): a
        # table is grouped with this slack, so the re-count of its chunk rarely cuts it again
        newline, join = count_tokens(tokenizer, ["\n", "\n\n"]) if not self.additive else (0, 0)
        self.line_cost, self.join_cost = newline, 2 * join
        self.strategy = cfg.strategy

    # -- cutting -------------------------------------------------------------------------------

    def _encode(self, texts: list[str]) -> list[_Encoded]:
        if not texts:
            return []
        encodings = self.tokenizer.encode_batch(texts, add_special_tokens=False)
        return [
            (text, len(e.ids), tuple(map(_first, e.offsets)))
            for text, e in zip(texts, encodings, strict=True)
        ]

    def _cut(self, encoded: _Encoded, capacity: int) -> list[tuple[_Encoded, bool]]:
        """``encoded`` in parts of at most ``capacity`` tokens, each with whether its count is
        exact (else it must be re-encoded)."""
        text, total, starts = encoded
        parts: list[tuple[_Encoded, bool]] = []
        lo, clean_start = 0, True
        while total - lo > capacity:
            begin, end = starts[lo], starts[lo + capacity]
            cut, clean = _cut_point(text, begin, starts[lo + capacity // 2], end)
            k = bisect_left(starts, cut, lo + 1, lo + capacity + 1)
            if starts[k] == begin:  # several tokens from one character: keep them together
                k = bisect_right(starts, begin, lo + 1)
            stop = starts[k] if k < total else len(text)
            exact = self.additive and clean and clean_start
            part = text[begin:stop].rstrip() if exact else text[begin:stop].strip()
            parts.append(((part, k - lo, tuple(s - begin for s in starts[lo:k])), exact))
            lo, clean_start = k, clean
        if lo < total:
            begin = starts[lo]
            part = text[begin:].strip()
            parts.append(
                ((part, total - lo, tuple(s - begin for s in starts[lo:])), self.additive and clean_start)
            )
        return [(p, exact) for p, exact in parts if p[0]]

    def _fit(self, items: list[tuple[_Encoded, int]], depth: int = 0) -> list[list[_Encoded]]:
        """Each (text, capacity) as parts of at most ``capacity`` tokens, with exact counts.

        Inexact parts are re-encoded in one batch and those that came out too large are cut
        again; every round works on strictly shorter texts, and a pathological tokenizer still
        stops after a few rounds (its parts keep their real, possibly oversize, counts).
        """
        fitted: list[list[_Encoded]] = []
        redo: list[tuple[int, int, int]] = []  # (item, part, capacity) to re-encode
        for encoded, capacity in items:
            if encoded[1] <= capacity:
                fitted.append([encoded])
                continue
            row: list[_Encoded] = []
            for cut, exact in self._cut(encoded, capacity):
                if not exact:
                    redo.append((len(fitted), len(row), capacity))
                row.append(cut)
            fitted.append(row)
        if redo:
            again = self._encode([fitted[item][at][0] for item, at, _ in redo])
            if depth < 4:
                refitted = self._fit(
                    [(e, cap) for e, (_, _, cap) in zip(again, redo, strict=True)], depth + 1
                )
            else:
                refitted = [[e] for e in again]
            for (item, at, _), parts in reversed(list(zip(redo, refitted, strict=True))):
                fitted[item][at : at + 1] = parts
        return fitted

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
        pieces: list[_Piece] = []
        oversize: list[tuple[_Piece, _Encoded, int]] = []  # and where its parts go
        tables: list[tuple[_Piece, list[_Encoded], int]] = []  # oversize tables as groups of rows
        headings_before = 0  # tokens of the headings right before this block
        for (block, text, section, anchor), (_, tokens, starts) in zip(located, encoded, strict=True):
            piece = _Piece(
                text,
                tokens,
                starts,
                block.page,
                section,
                anchor,
                block.kind == "heading",
                kind=block.kind,
                header_rows=block.header_rows,
                confidence=block.confidence,
            )
            # Room kept for the headings that open the chunk, so a heading is never left alone.
            reserve = min(headings_before, self.size // 2)
            headings_before = headings_before + tokens if piece.heading else 0
            if tokens <= self.size - reserve:
                pieces.append(piece)
                continue
            # Cut so that a part plus an overlap tail (or the headings) still fits a chunk.
            capacity = self.size - max(self.overlap, reserve)
            # (a headed table's parts get no overlap tail: see ``pack``)
            rows = (
                _table_parts(
                    text, starts, self.size - reserve - self.join_cost, block.header_rows, self.line_cost
                )
                if block.header_rows
                else []
            )
            if rows:
                tables.append((piece, rows, self.size - reserve - self.join_cost))
            else:
                oversize.append((piece, (text, tokens, starts), capacity))
            pieces.append(piece)  # replaced by its parts below
        if not oversize and not tables:
            return pieces
        return self._replace_oversize(pieces, oversize, tables)

    def _replace_oversize(
        self,
        pieces: list[_Piece],
        oversize: list[tuple[_Piece, _Encoded, int]],
        tables: list[tuple[_Piece, list[_Encoded], int]],
    ) -> list[_Piece]:
        """``pieces`` with each oversize one replaced by its parts.

        A table is cut between rows, its header row opening every part (``_table_parts``); a
        part that still does not fit (one huge row) is cut like any text."""
        parts: dict[int, list[_Piece]] = {id(big): [big] for big, _, _ in oversize}
        owners = [id(big) for big, _, _ in oversize]  # whose parts each oversize piece is among
        counted = [group for _, groups, _ in tables for group in groups]
        if not self.additive:  # the sums of the lines' counts are estimates: count for real
            counted = self._encode([text for text, _, _ in counted])
        encoded_rows = iter(counted)
        for table, groups, room in tables:
            parts[id(table)] = []
            for group_text, group_tokens, group_starts in (next(encoded_rows) for _ in groups):
                part = replace(table, text=group_text, tokens=group_tokens, starts=group_starts)
                if group_tokens > room:
                    oversize.append((part, (group_text, group_tokens, group_starts), room))
                    owners.append(id(table))
                parts[id(table)].append(part)
        fitted = self._fit([(encoded, room) for _, encoded, room in oversize])
        for (big, _, _), owner, cut in zip(oversize, owners, fitted, strict=True):
            siblings = parts[owner]
            at = next(i for i, p in enumerate(siblings) if p is big)
            siblings[at : at + 1] = [replace(big, text=t, tokens=n, starts=st) for t, n, st in cut]
        out: list[_Piece] = []
        for piece in pieces:
            out.extend(parts.get(id(piece), [piece]))
        return out

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
            # A table with a known header never shares a chunk with the part before it (each
            # part repeats the header; two in one chunk would say it twice).
            if current and (
                used + piece.tokens > self.size or (piece.header_rows and current[-1].header_rows)
            ):
                # Headings at the end of a full chunk belong to what follows them.
                carried: list[_Piece] = []
                while current and current[-1].heading and len(current) > 1:
                    carried.insert(0, current.pop())
                carried_tokens = sum(p.tokens for p in carried)
                if carried_tokens + piece.tokens > self.size:
                    current.extend(carried)
                    carried, carried_tokens = [], 0
                chunks.append(current)
                if carried or (piece.header_rows and current[-1].header_rows):
                    head = carried  # a table part opens with its header, not the rows before it
                else:
                    head = self._tail(current, self.size - piece.tokens)
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
        counts: list[int] = []  # exact for an additive tokenizer
        for group in packed:
            text = "\n\n".join(p.text for p in group).strip()
            if not text:
                continue
            own = [p for p in group if not p.tail] or group
            ref = own[-1] if self.strategy == "structure" else own[0]
            meta: dict[str, Any] = {"section": list(ref.section), "type": _chunk_type(own)}
            if ref.anchor:
                meta["anchor"] = ref.anchor
            confidences = [p.confidence for p in own if p.confidence is not None]
            if confidences:
                meta["ocr_confidence"] = round(sum(confidences) / len(confidences), 1)
            pages = sorted({p.page for p in own if p.page is not None})
            if pages:
                meta["page"] = pages[0]
                meta["pages"] = pages
            texts.append(text)
            metas.append(meta)
            counts.append(sum(p.tokens for p in group))
        if self.additive:  # the pieces' counts add up; nothing to re-encode
            return [
                ChunkDraft(text=text, token_count=tokens, metadata=meta)
                for text, meta, tokens in zip(texts, metas, counts, strict=True)
            ]
        # Counts may not add up over the joins: re-count, and cut again what came out larger.
        fitted = self._fit([(encoded, self.size) for encoded in self._encode(texts)])
        return [
            ChunkDraft(text=text, token_count=tokens, metadata=dict(meta))
            for parts, meta in zip(fitted, metas, strict=True)
            for text, tokens, _ in parts
        ]


def _table_parts(
    text: str, starts: tuple[int, ...], capacity: int, header_rows: int, line_cost: int = 0
) -> list[_Encoded]:
    """An oversize table's rows in groups of about ``capacity`` tokens (counted from the token
    offsets), each opening with the header row(s) (the first ``header_rows`` lines); [] when the
    table cannot be cut that way (a header that takes half the room, fewer than two rows).

    Each group comes with its token count and offsets as the sum of its lines' (exact for an
    additive tokenizer, as the lines are joined at whitespace; re-encoded otherwise, and each line
    then counted ``line_cost`` tokens more for its line break)."""
    lines = text.split("\n")
    if len(lines) < header_rows + 2:
        return []
    bounds: list[int] = [0]
    for line in lines:
        bounds.append(bounds[-1] + len(line) + 1)
    firsts = [bisect_left(starts, b) for b in bounds]
    counts = [b - a + line_cost for a, b in pairwise(firsts)]
    header_tokens = sum(counts[:header_rows])
    if header_tokens > capacity // 2:
        return []
    groups: list[list[int]] = []  # line numbers
    used = header_tokens
    for i in range(header_rows, len(lines)):
        if groups and used + counts[i] <= capacity:
            groups[-1].append(i)
            used += counts[i]
        else:
            groups.append([*range(header_rows), i])
            used = header_tokens + counts[i]
    out: list[_Encoded] = []
    for group in groups:
        offsets: list[int] = []
        at = 0  # where line i starts in the group's text
        for i in group:
            offsets.extend(start - bounds[i] + at for start in starts[firsts[i] : firsts[i + 1]])
            at += len(lines[i]) + 1
        out.append(("\n".join(lines[i] for i in group), len(offsets), tuple(offsets)))
    return out


#: a chunk's ``metadata.type`` by the kind of the blocks that hold most of its tokens
_TYPES = {"table": "table", "code": "code", "ocr": "ocr"}


def _chunk_type(own: list[_Piece]) -> str:
    """``table``, ``code``, ``ocr`` or ``text`` (DESIGN §7): the kind with most of the chunk's own tokens,
    headings aside (a sheet's name above its rows does not make the chunk text)."""
    weights: dict[str, int] = {}
    for p in [p for p in own if not p.heading] or own:
        weights[_TYPES.get(p.kind, "text")] = weights.get(_TYPES.get(p.kind, "text"), 0) + p.tokens
    return max(weights, key=lambda t: weights[t])


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

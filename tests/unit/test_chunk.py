"""Chunking with the real all-MiniLM-L6-v2 tokenizer: size caps, overlap, sections, pages."""

from __future__ import annotations

import itertools
import time

import pytest
from fpdf import FPDF
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from lorebase.adapters.embedders.local import load_tokenizer
from lorebase.adapters.parsers.document import Block, ParsedDocument
from lorebase.adapters.parsers.html import HtmlParser
from lorebase.adapters.parsers.markdown import MarkdownParser
from lorebase.adapters.parsers.pdf import PdfParser
from lorebase.pipeline.chunk import chunk, count_tokens
from lorebase.pipeline.types import ChunkDraft, ChunkingConfig


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return load_tokenizer("all-MiniLM-L6-v2")


def sentences(n: int, topic: str = "river") -> str:
    return " ".join(f"Sentence {i} says something about the {topic} and its banks." for i in range(n))


def words_without_punctuation(n: int) -> str:
    vocabulary = ["apple", "river", "house", "green", "music", "water", "stone", "light"]
    return " ".join(vocabulary[i % len(vocabulary)] for i in range(n))


def long_document() -> ParsedDocument:
    code = "\n".join(f"    result_{i} = compute(value_{i}, factor={i})  # step {i}" for i in range(400))
    table = "\n".join(f"row {i} | name {i} | {i * 3} | note about item {i}" for i in range(400))
    blocks = [
        Block(kind="heading", text="Handbook", level=1),
        Block(kind="paragraph", text=sentences(8)),
        Block(kind="heading", text="Long prose", level=2),
        Block(kind="paragraph", text=words_without_punctuation(5000)),
        Block(kind="heading", text="Code", level=2),
        Block(kind="code", text=code),
        Block(kind="heading", text="Table", level=2),
        Block(kind="table", text=table),
        Block(kind="list", text="\n".join(f"- item {i} in the list" for i in range(300))),
        Block(kind="paragraph", text="x" * 3000),  # one "word" longer than any token limit
    ]
    return ParsedDocument(title="Handbook", blocks=blocks)


def assert_well_formed(chunks: list[ChunkDraft], tok: Tokenizer, size: int) -> None:
    assert chunks
    real = count_tokens(tok, [c.text for c in chunks])
    for c, n in zip(chunks, real, strict=True):
        assert c.text and c.text == c.text.strip()
        assert c.token_count == n
        assert 0 < n <= size
        assert isinstance(c.metadata["section"], list)


# -- sizes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["recursive", "structure"])
@pytest.mark.parametrize(
    ("chunk_size", "overlap", "max_tokens"), [(200, 20, 256), (512, 50, 128), (40, 35, 256)]
)
def test_every_chunk_fits_the_effective_size(
    tok: Tokenizer, strategy: str, chunk_size: int, overlap: int, max_tokens: int
) -> None:
    cfg = ChunkingConfig(strategy=strategy, chunk_size=chunk_size, chunk_overlap=overlap)  # type: ignore[arg-type]
    chunks = chunk(long_document(), cfg, tok, max_tokens=max_tokens)
    assert_well_formed(chunks, tok, min(chunk_size, max_tokens))


def test_unpunctuated_paragraph_of_5000_tokens_is_cut_within_size(tok: Tokenizer) -> None:
    text = words_without_punctuation(5000)
    assert count_tokens(tok, [text]) == [5000]
    doc = ParsedDocument(title=None, blocks=[Block(kind="paragraph", text=text)])
    chunks = chunk(doc, ChunkingConfig(chunk_size=200, chunk_overlap=20), tok, max_tokens=256)
    assert_well_formed(chunks, tok, 200)
    assert 25 <= len(chunks) <= 40
    assert all(c.text.split()[0] in text.split() for c in chunks)  # cut at word boundaries


def test_long_code_and_table_blocks_are_cut_at_line_boundaries(tok: Tokenizer) -> None:
    table = "\n".join(f"row {i} | name {i} | value {i * 7}" for i in range(500))
    doc = ParsedDocument(title=None, blocks=[Block(kind="table", text=table)])
    chunks = chunk(doc, ChunkingConfig(chunk_size=100, chunk_overlap=0), tok, max_tokens=256)
    assert_well_formed(chunks, tok, 100)
    rows = set(table.split("\n"))
    assert all(line in rows for c in chunks for line in c.text.split("\n"))


def test_max_tokens_caps_the_configured_chunk_size(tok: Tokenizer) -> None:
    doc = ParsedDocument(title=None, blocks=[Block(kind="paragraph", text=sentences(200))])
    chunks = chunk(doc, ChunkingConfig(chunk_size=1000, chunk_overlap=0), tok, max_tokens=64)
    assert_well_formed(chunks, tok, 64)
    assert max(c.token_count for c in chunks) > 48  # packed close to the cap, not tiny


def test_sizes_hold_for_a_tokenizer_that_counts_paragraph_breaks() -> None:
    # A byte-level BPE tokenizer turns "\n\n" into tokens, so packed counts are not additive:
    # the final re-count must catch the overflow and cut those chunks again.
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    bpe.train_from_iterator([sentences(50, topic) for topic in ("river", "lake", "sea")], trainer=trainer)
    assert count_tokens(bpe, ["river\n\nlake"]) > [sum(count_tokens(bpe, ["river", "lake"]))]
    blocks = [Block(kind="paragraph", text=w) for w in ["river", "lake", "sea", "banks"] * 50]
    for strategy in ("recursive", "structure"):
        cfg = ChunkingConfig(strategy=strategy, chunk_size=60, chunk_overlap=10)
        chunks = chunk(ParsedDocument(None, blocks), cfg, bpe, max_tokens=256)
        assert_well_formed(chunks, bpe, 60)
        assert "".join(c.text for c in chunks).count("river") >= 50


# -- overlap -------------------------------------------------------------------------------------


def test_recursive_chunks_overlap_with_the_previous_chunk(tok: Tokenizer) -> None:
    blocks = [Block(kind="paragraph", text=sentences(3, topic=f"topic{i}")) for i in range(30)]
    chunks = chunk(
        ParsedDocument(None, blocks), ChunkingConfig(chunk_size=120, chunk_overlap=30), tok, max_tokens=256
    )
    assert len(chunks) > 5
    for prev, nxt in itertools.pairwise(chunks):
        first_sentence = nxt.text.split(". ")[0]
        assert first_sentence in prev.text  # the next chunk starts with the tail of the previous one
        overlap_tokens = count_tokens(
            tok, [nxt.text[: nxt.text.index(first_sentence) + len(first_sentence)]]
        )[0]
        assert overlap_tokens <= 30


def test_overlap_starts_at_a_word_boundary(tok: Tokenizer) -> None:
    doc = ParsedDocument(None, [Block(kind="paragraph", text=words_without_punctuation(1000))])
    chunks = chunk(doc, ChunkingConfig(chunk_size=100, chunk_overlap=20), tok, max_tokens=256)
    words = set(words_without_punctuation(8).split())
    assert all(c.text.split()[0] in words for c in chunks)


def test_overlap_is_clamped_below_half_the_size(tok: Tokenizer) -> None:
    doc = ParsedDocument(None, [Block(kind="paragraph", text=words_without_punctuation(2000))])
    chunks = chunk(doc, ChunkingConfig(chunk_size=50, chunk_overlap=500), tok, max_tokens=256)
    assert_well_formed(chunks, tok, 50)
    # every chunk adds at least half a chunk of new text, so the document is covered quickly
    assert len(chunks) <= 2000 // 25 + 2


def test_without_overlap_chunks_partition_the_text(tok: Tokenizer) -> None:
    text = words_without_punctuation(3000)
    doc = ParsedDocument(None, [Block(kind="paragraph", text=text)])
    chunks = chunk(doc, ChunkingConfig(chunk_size=100, chunk_overlap=0), tok, max_tokens=256)
    assert " ".join(c.text for c in chunks) == text


# -- sections and headings -----------------------------------------------------------------------

GUIDE = f"""# Guide

{sentences(3, "intro")}

## Install

{sentences(20, "installer")}

### Linux

{sentences(2, "penguin")}

## Configure

{sentences(2, "settings")}
"""


def test_structure_starts_a_chunk_at_each_heading_with_the_section_path(tok: Tokenizer) -> None:
    doc = MarkdownParser().parse(GUIDE.encode())
    cfg = ChunkingConfig(strategy="structure", chunk_size=120, chunk_overlap=20)
    chunks = chunk(doc, cfg, tok, max_tokens=256)
    assert_well_formed(chunks, tok, 120)
    starts = [(c.metadata["section"], c.text.split("\n")[0]) for c in chunks]
    assert starts[0] == (["Guide"], "Guide")
    install = [c for c in chunks if c.metadata["section"] == ["Guide", "Install"]]
    assert len(install) >= 2 and install[0].text.startswith("Install\n\n")
    assert all("penguin" not in c.text for c in install)
    linux = [c for c in chunks if c.metadata["section"] == ["Guide", "Install", "Linux"]]
    assert len(linux) == 1 and linux[0].text.startswith("Linux\n\n") and "installer" not in linux[0].text
    assert chunks[-1].metadata["section"] == ["Guide", "Configure"]
    assert chunks[-1].text.startswith("Configure\n\n")


def test_structure_keeps_consecutive_headings_with_their_text(tok: Tokenizer) -> None:
    doc = MarkdownParser().parse(b"# Manual\n\n## Chapter\n\n### Part\n\nThe only paragraph.")
    chunks = chunk(doc, ChunkingConfig(strategy="structure"), tok, max_tokens=256)
    assert [c.text for c in chunks] == ["Manual\n\nChapter\n\nPart\n\nThe only paragraph."]
    assert chunks[0].metadata["section"] == ["Manual", "Chapter", "Part"]


def test_structure_chunks_carry_the_anchor_of_the_nearest_heading(tok: Tokenizer) -> None:
    page = (
        "<html><body><main><h1 id='top'>Top</h1><p>Intro text.</p><h2 id='usage'>Usage</h2><p>Use it.</p>"
        "<h3>No id here</h3><p>Details.</p></main></body></html>"
    )
    doc = HtmlParser().parse(page.encode())
    chunks = chunk(doc, ChunkingConfig(strategy="structure"), tok, max_tokens=256)
    assert [(c.metadata["section"], c.metadata.get("anchor")) for c in chunks] == [
        (["Top"], "top"),
        (["Top", "Usage"], "usage"),
        (["Top", "Usage", "No id here"], "usage"),
    ]


def test_recursive_packs_across_headings_and_records_the_first_blocks_section(tok: Tokenizer) -> None:
    doc = MarkdownParser().parse(b"# Guide\n\nIntro.\n\n## Install\n\nRun it.\n\n## Use\n\nCall it.")
    chunks = chunk(doc, ChunkingConfig(strategy="recursive"), tok, max_tokens=256)
    assert [c.text for c in chunks] == ["Guide\n\nIntro.\n\nInstall\n\nRun it.\n\nUse\n\nCall it."]
    assert chunks[0].metadata["section"] == ["Guide"]


def test_recursive_never_ends_a_chunk_with_a_dangling_heading(tok: Tokenizer) -> None:
    blocks: list[Block] = []
    for i in range(12):
        blocks.append(Block(kind="heading", text=f"Heading number {i}", level=2))
        blocks.append(Block(kind="paragraph", text=sentences(4, topic=f"t{i}")))
    chunks = chunk(
        ParsedDocument(None, blocks), ChunkingConfig(chunk_size=150, chunk_overlap=0), tok, max_tokens=256
    )
    assert len(chunks) > 3
    headings = {b.text for b in blocks if b.kind == "heading"}
    assert all(c.text.split("\n\n")[-1] not in headings for c in chunks)
    assert all(c.metadata["section"] == [c.text.split("\n\n")[0]] for c in chunks)


# -- pages ---------------------------------------------------------------------------------------


def three_page_pdf() -> bytes:
    pdf = FPDF()
    pdf.set_font("Helvetica", size=11)
    for topic in ("apples", "bananas", "cherries"):
        pdf.add_page()
        pdf.multi_cell(0, 6, sentences(6, topic), new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())


def test_chunks_of_a_parsed_pdf_record_their_pages(tok: Tokenizer) -> None:
    doc = PdfParser().parse(three_page_pdf())
    small = chunk(doc, ChunkingConfig(chunk_size=60, chunk_overlap=0), tok, max_tokens=256)
    assert {c.metadata["page"] for c in small} == {1, 2, 3}
    topics = {1: "apples", 2: "bananas", 3: "cherries"}
    for c in small:
        pages = c.metadata["pages"]
        assert c.metadata["page"] == pages[0] and pages == list(range(pages[0], pages[-1] + 1))
        assert {p for p, topic in topics.items() if topic in c.text} == set(pages)
    big = chunk(doc, ChunkingConfig(chunk_size=256, chunk_overlap=0), tok, max_tokens=256)
    assert big[0].metadata["page"] == 1 and big[0].metadata["pages"][:2] == [1, 2]


def test_chunks_of_unpaged_documents_have_no_page(tok: Tokenizer) -> None:
    doc = MarkdownParser().parse(GUIDE.encode())
    assert all("page" not in c.metadata for c in chunk(doc, ChunkingConfig(), tok, max_tokens=256))


# -- general -------------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["recursive", "structure"])
def test_chunking_is_deterministic_and_in_document_order(tok: Tokenizer, strategy: str) -> None:
    cfg = ChunkingConfig(strategy=strategy, chunk_size=80, chunk_overlap=10)  # type: ignore[arg-type]
    first = chunk(long_document(), cfg, tok, max_tokens=256)
    second = chunk(long_document(), cfg, tok, max_tokens=256)
    assert first == second
    code_at = next(i for i, c in enumerate(first) if "result_0 =" in c.text)
    table_at = next(i for i, c in enumerate(first) if "row 0 |" in c.text)
    assert code_at < table_at


def test_empty_or_blank_documents_give_no_chunks(tok: Tokenizer) -> None:
    assert chunk(ParsedDocument(None, []), ChunkingConfig(), tok, max_tokens=256) == []
    blank = ParsedDocument(None, [Block(kind="paragraph", text="  \n "), Block(kind="code", text="\n\n")])
    assert chunk(blank, ChunkingConfig(strategy="structure"), tok, max_tokens=256) == []


def test_a_single_heading_is_a_chunk(tok: Tokenizer) -> None:
    doc = ParsedDocument(None, [Block(kind="heading", text="  Lonely  ", level=1)])
    chunks = chunk(doc, ChunkingConfig(strategy="structure"), tok, max_tokens=256)
    assert [(c.text, c.metadata["section"]) for c in chunks] == [("Lonely", ["Lonely"])]


def test_count_tokens_ignores_special_tokens(tok: Tokenizer) -> None:
    assert count_tokens(tok, []) == []
    assert count_tokens(tok, ["hello world", ""]) == [2, 0]


def test_chunking_a_large_document_is_fast(tok: Tokenizer) -> None:
    blocks = [Block(kind="paragraph", text=sentences(12, topic=f"t{i}")) for i in range(1500)]  # ~200k tokens
    started = time.perf_counter()
    chunks = chunk(
        ParsedDocument(None, blocks), ChunkingConfig(chunk_size=200, chunk_overlap=20), tok, max_tokens=256
    )
    assert time.perf_counter() - started < 10
    assert len(chunks) > 500

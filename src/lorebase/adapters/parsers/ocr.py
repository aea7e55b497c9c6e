"""Text from images with Tesseract, through pytesseract (PNG, JPEG, TIFF uploads; PDF pages
without a text layer, rendered by ``pdf.py``).

Why pytesseract and not tesserocr: tesserocr binds libtesseract in-process and has to be
compiled against the ``libtesseract-dev`` headers of the machine's Tesseract (no wheel for
Debian's build; it did not install here), while pytesseract only needs the ``tesseract``
binary that ``apt install tesseract-ocr tesseract-ocr-eng`` provides. Tesseract's own work
dominates a page (~1 s at 300 DPI) either way; the extra process per page costs a few ms.
Running Tesseract as a child of the parse process also keeps it under that process's limits:
``RLIMIT_CPU`` and ``RLIMIT_AS`` are inherited across ``fork``/``exec``, and the wall clock
is enforced here with pytesseract's ``timeout`` set to what remains of the document's
``max_seconds`` (the parent kills the parse process at the deadline, which would orphan a
running ``tesseract``; the timeout ends it first).

Settings reach the parse processes as :class:`OcrLimits` (``set_limits`` in each process, like
``zipguard``). Decompression bombs (a tiny PNG that decodes to gigapixels) are refused from the
image header before any pixel is decoded: ``ocr_max_pixels`` per page, and Pillow's own
``Image.MAX_IMAGE_PIXELS`` set to the same cap; a TIFF with more than ``ocr_max_pages`` frames is
refused too.
"""

from __future__ import annotations

import contextlib
import functools
import io
import math
import os
import shutil
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from PIL import Image, ImageSequence

from lorebase.adapters.parsers.document import Block, ParsedDocument
from lorebase.errors import PermanentError
from lorebase.settings import ParseSettings

#: the install hint every "no Tesseract" message carries
INSTALL_HINT = "apt install tesseract-ocr tesseract-ocr-eng"
PNG, JPEG, TIFF = "image/png", "image/jpeg", "image/tiff"
IMAGE_MEDIA_TYPES: tuple[str, ...] = (PNG, JPEG, TIFF)


#: the defaults live in the settings, once
_DEFAULTS = ParseSettings()


@dataclass(frozen=True, slots=True)
class OcrLimits:
    """The ``parse.ocr*`` settings a parse process needs (picklable, hashable)."""

    enabled: bool = _DEFAULTS.ocr
    tesseract_cmd: str = _DEFAULTS.tesseract_cmd
    language: str = _DEFAULTS.ocr_language
    dpi: int = _DEFAULTS.ocr_dpi
    max_pages: int = _DEFAULTS.ocr_max_pages
    max_pixels: int = _DEFAULTS.ocr_max_pixels
    min_confidence: float = _DEFAULTS.ocr_min_confidence

    @classmethod
    def of(cls, parse: ParseSettings) -> OcrLimits:
        return cls(
            parse.ocr,
            parse.tesseract_cmd,
            parse.ocr_language,
            parse.ocr_dpi,
            parse.ocr_max_pages,
            parse.ocr_max_pixels,
            parse.ocr_min_confidence,
        )


@dataclass(slots=True)
class _State:
    limits: OcrLimits = field(default_factory=OcrLimits)
    deadline: float | None = None  # time.monotonic() by which the document's OCR must end
    wall_message: str = "parsing stopped: OCR took longer than the document's time limit"


_STATE = _State()


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """One thread per Tesseract: the parse pool runs one process per core already, and
    Tesseract's OpenMP threads on a busy machine made a page 4-6x slower (measured: 2.9 s ->
    16.5 s at load 10). Set only around the call that spawns it (its child reads the variable):
    set at import, it reached every process importing the parsers, torch's OpenMP included."""
    before = os.environ.get("OMP_THREAD_LIMIT")
    os.environ["OMP_THREAD_LIMIT"] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("OMP_THREAD_LIMIT", None)
        else:
            os.environ["OMP_THREAD_LIMIT"] = before


def set_limits(limits: OcrLimits) -> None:
    """This process's OCR settings (a parse process calls it once at start)."""
    _STATE.limits = limits
    Image.MAX_IMAGE_PIXELS = limits.max_pixels


def limits() -> OcrLimits:
    return _STATE.limits


@contextlib.contextmanager
def use_limits(new: OcrLimits) -> Iterator[None]:
    """``new`` for the duration of the block (in-thread parsing, tests)."""
    old, old_pixels = _STATE.limits, Image.MAX_IMAGE_PIXELS
    set_limits(new)
    try:
        yield
    finally:
        _STATE.limits = old
        Image.MAX_IMAGE_PIXELS = old_pixels


def set_deadline(deadline: float | None, message: str | None = None) -> None:
    """The monotonic time by which this document's OCR must end (None: no limit) and the error
    it fails with beyond it (the parse process sets both before each document)."""
    _STATE.deadline = deadline
    if message:
        _STATE.wall_message = message


@functools.cache
def tesseract_version(cmd: str) -> str | None:
    """Tesseract's version, or None when ``cmd`` is not an installed binary (checked once per
    command and process)."""
    if shutil.which(cmd) is None:
        return None
    import pytesseract

    pytesseract.pytesseract.tesseract_cmd = cmd
    try:
        return str(pytesseract.get_tesseract_version())
    except (pytesseract.TesseractNotFoundError, OSError, RuntimeError):
        return None


def missing_tesseract_message(cmd: str) -> str:
    where = "" if cmd == "tesseract" else f" (looked for {cmd!r}, setting parse.tesseract_cmd)"
    return f"Tesseract is not installed{where} ({INSTALL_HINT})"


def require_tesseract() -> OcrLimits:
    """The OCR settings, or a permanent error when OCR is off or Tesseract is missing."""
    cfg = _STATE.limits
    if not cfg.enabled:
        raise PermanentError("OCR is off (LOREBASE_PARSE__OCR=false): images cannot be indexed")
    if tesseract_version(cfg.tesseract_cmd) is None:
        raise PermanentError(missing_tesseract_message(cfg.tesseract_cmd))
    return cfg


@dataclass(slots=True)
class OcrPage:
    """One OCR'd page: paragraph texts in reading order and the mean word confidence (0-100;
    None when Tesseract found no words)."""

    paragraphs: list[str]
    confidence: float | None


def _remaining() -> float:
    if _STATE.deadline is None:
        return 0  # pytesseract: no timeout
    left = _STATE.deadline - time.monotonic()
    if left <= 0:
        raise PermanentError(_STATE.wall_message)
    return left


def ocr_image(image: Image.Image) -> OcrPage:
    """Tesseract over one decoded image: paragraphs (Tesseract's blocks and paragraphs, lines
    kept) and the mean confidence of the words it read."""
    import pytesseract

    cfg = require_tesseract()
    pytesseract.pytesseract.tesseract_cmd = cfg.tesseract_cmd
    if image.mode not in ("L", "RGB", "1"):
        image = image.convert("RGB")
    try:
        with _one_thread():
            data: dict[str, list[Any]] = pytesseract.image_to_data(
                image, lang=cfg.language, output_type=pytesseract.Output.DICT, timeout=_remaining()
            )
    except RuntimeError as exc:  # pytesseract's timeout
        if "timeout" in str(exc).lower():
            raise PermanentError(_STATE.wall_message) from None
        raise PermanentError(f"OCR failed: {exc}") from None
    except pytesseract.TesseractError as exc:
        raise PermanentError(f"OCR failed: {exc.message or exc}") from None
    paragraphs: dict[tuple[int, int], dict[int, list[str]]] = {}
    confidences: list[float] = []
    for i, word in enumerate(data["text"]):
        word = (word or "").strip()
        conf = float(data["conf"][i])
        if not word or conf < 0:
            continue
        confidences.append(conf)
        key = (int(data["block_num"][i]), int(data["par_num"][i]))
        paragraphs.setdefault(key, {}).setdefault(int(data["line_num"][i]), []).append(word)
    texts = ["\n".join(" ".join(words) for words in lines.values()) for lines in paragraphs.values()]
    mean = round(sum(confidences) / len(confidences), 1) if confidences else None
    return OcrPage(texts, mean)


def check_pixels(width: int, height: int, what: str) -> None:
    """Refuse a page larger than ``ocr_max_pixels`` (a decompression bomb) before decoding it."""
    cap = _STATE.limits.max_pixels
    if width * height > cap:
        raise PermanentError(
            f"{what} is {width}x{height} pixels, more than the {cap:,} pixels OCR accepts "
            "(parse.ocr_max_pixels): refused as a possible decompression bomb"
        )


def render_scale(width_pt: float, height_pt: float) -> float:
    """PDFium's render scale for a page of this size: ``ocr_dpi``, lowered to fit ``ocr_max_pixels``."""
    cfg = _STATE.limits
    scale = cfg.dpi / 72
    area = max(width_pt * height_pt, 1.0)
    if area * scale * scale > cfg.max_pixels:
        scale = math.sqrt(cfg.max_pixels / area)
    return scale


def blocks_of(page: OcrPage, number: int | None) -> list[Block]:
    return [Block(kind="ocr", text=t, page=number, confidence=page.confidence) for t in page.paragraphs]


def low_confidence_warning(pages: list[tuple[int, float]]) -> str:
    floor = _STATE.limits.min_confidence
    listed = ", ".join(f"{n} ({c:g})" for n, c in pages)
    return (
        f"OCR confidence below {floor:g} on page(s) {listed}: the text of these pages may be wrong "
        "(a poor scan?)"
    )


def ocr_pages(pages: list[tuple[int | None, Image.Image]]) -> tuple[list[Block], list[str]]:
    """OCR each ``(page number, image)``: blocks, and warnings for pages below the confidence floor."""
    blocks: list[Block] = []
    low: list[tuple[int, float]] = []
    for number, image in pages:
        page = ocr_image(image)
        blocks += blocks_of(page, number)
        if page.confidence is not None and page.confidence < _STATE.limits.min_confidence:
            low.append((number or 1, page.confidence))
    return blocks, [low_confidence_warning(low)] if low else []


class ImageParser:
    """PNG, JPEG and TIFF: OCR'd page by page (a multi-page TIFF numbers its pages)."""

    media_types: tuple[str, ...] = IMAGE_MEDIA_TYPES

    def parse(self, data: bytes, *, filename: str | None = None) -> ParsedDocument:
        require_tesseract()
        name = filename or "the image"
        try:
            with warnings.catch_warnings():  # Pillow warns past MAX_IMAGE_PIXELS; check_pixels refuses
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image = Image.open(io.BytesIO(data))
            with image:
                frames = getattr(image, "n_frames", 1)
                if frames > _STATE.limits.max_pages:
                    raise PermanentError(
                        f"{name} has {frames} pages, more than the {_STATE.limits.max_pages} OCR "
                        "accepts (parse.ocr_max_pages)"
                    )
                blocks: list[Block] = []
                low: list[tuple[int, float]] = []
                for number, frame in enumerate(ImageSequence.Iterator(image), start=1):
                    check_pixels(*frame.size, f"page {number} of {name}" if frames > 1 else name)
                    page = ocr_image(frame.copy())
                    blocks += blocks_of(page, number if frames > 1 else None)
                    if page.confidence is not None and page.confidence < _STATE.limits.min_confidence:
                        low.append((number, page.confidence))
        except Image.DecompressionBombError as exc:
            raise PermanentError(f"{name} refused as a possible decompression bomb: {exc}") from None
        except (OSError, SyntaxError, ValueError) as exc:  # Pillow's "cannot identify", truncated data
            raise PermanentError(f"could not read image: {exc}") from None
        if not blocks:
            raise PermanentError(f"no extractable text: OCR found no text in {name}")
        meta: dict[str, Any] = {"ocr": True}
        if low:
            meta["warnings"] = [low_confidence_warning(low)]
        return ParsedDocument(title=None, blocks=blocks, page_count=frames, metadata=meta)

"""Zip-based documents (DOCX, PPTX, XLSX, EPUB) inspected before anything decompresses them.

A zip's central directory declares, for every entry, its compressed and uncompressed sizes.
Reading it costs nothing (no entry is inflated), and Python's :mod:`zipfile` — which
python-docx reads through — never inflates an entry past its declared ``file_size``, so the
declared sizes bound what parsing can expand to. A file is refused, unparsed, when it has too
many entries, when its entries together declare more than the limit (this also catches
"overlapping" zip bombs whose directory points many entries at the same compressed data), or
when one entry's compression ratio is that of a bomb (a run of zeros deflates ~1000:1; real
XML rarely beyond 20:1). Entries below :data:`RATIO_GRACE_BYTES` are not ratio-checked: a
tiny, very compressible part cannot expand to much.

:func:`check_xml_parts` then reads the prolog of every XML part (only up to its root element)
and refuses a DTD or entity declarations: OOXML forbids DTDs, and a nested ``<!ENTITY>``
chain ("billion laughs") is the classic way to make an XML parser expand a few KB into GBs.
python-docx's own lxml parser is built with ``resolve_entities=False`` as well; the pre-scan
makes the refusal explicit and readable instead of relying on that.

The limits default to :class:`~lorebase.settings.ParseSettings`' defaults; a parser process is
given the configured ones with :func:`use_limits`.
"""

from __future__ import annotations

import contextvars
import io
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from defusedxml import DefusedXmlException, DTDForbidden, EntitiesForbidden, ExternalReferenceForbidden
from defusedxml.ElementTree import DefusedXMLParser

from lorebase.errors import PermanentError
from lorebase.settings import ParseSettings

#: entries smaller than this (uncompressed) are not ratio-checked
RATIO_GRACE_BYTES = 1024 * 1024
_XML_SUFFIXES = (".xml", ".rels")
_READ_CHUNK = 64 * 1024


@dataclass(frozen=True, slots=True)
class ZipLimits:
    max_entries: int
    max_uncompressed_bytes: int
    max_ratio: float

    @classmethod
    def of(cls, parse: ParseSettings) -> ZipLimits:
        return cls(parse.zip_max_entries, parse.zip_max_uncompressed_bytes, parse.zip_max_ratio)


DEFAULT_LIMITS = ZipLimits.of(ParseSettings())
_LIMITS: contextvars.ContextVar[ZipLimits] = contextvars.ContextVar("zip_limits", default=DEFAULT_LIMITS)


class ZipRefused(ValueError):
    """The archive is refused unparsed; ``str(exc)`` is a readable reason."""


def current_limits() -> ZipLimits:
    return _LIMITS.get()


def set_limits(limits: ZipLimits) -> None:
    """Make ``limits`` the default of this context (a parser process calls it once at start)."""
    _LIMITS.set(limits)


@contextmanager
def use_limits(limits: ZipLimits) -> Iterator[None]:
    token = _LIMITS.set(limits)
    try:
        yield
    finally:
        _LIMITS.reset(token)


def human_bytes(n: float) -> str:
    """1.2 GB, 512 MB, 80 KB (binary multiples, short names)."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" or n >= 100 or n == int(n) else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"  # pragma: no cover


def check_archive(archive: zipfile.ZipFile, limits: ZipLimits | None = None, *, kind: str = "DOCX") -> None:
    """Raise :class:`ZipRefused` if the central directory of ``archive`` is that of a zip bomb."""
    limits = limits or current_limits()
    entries = archive.infolist()
    if len(entries) > limits.max_entries:
        raise ZipRefused(
            f"refused: the {kind} holds {len(entries):,} zip entries (limit {limits.max_entries:,})"
        )
    total = sum(info.file_size for info in entries)
    if total > limits.max_uncompressed_bytes:
        raise ZipRefused(
            f"refused: the {kind} would expand to {human_bytes(total)} "
            f"(limit {human_bytes(limits.max_uncompressed_bytes)})"
        )
    for info in entries:
        if info.file_size >= RATIO_GRACE_BYTES:
            ratio = info.file_size / max(info.compress_size, 1)
            if ratio > limits.max_ratio:
                raise ZipRefused(
                    f"refused: the {kind} entry {info.filename!r} would expand {ratio:,.0f} times "
                    f"(to {human_bytes(info.file_size)}; limit {limits.max_ratio:g}x): a zip bomb?"
                )


def check_zip(data: bytes, limits: ZipLimits | None = None, *, kind: str = "DOCX") -> None:
    """:func:`check_archive` on raw bytes. A file that is not a readable zip passes (the caller
    decides what a damaged zip means)."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError, OSError):
        return
    with archive:
        check_archive(archive, limits, kind=kind)


class _StopAtRoot(Exception):
    pass


class _PrologTarget:
    """A parser target that stops at the root element: only the prolog (where a DTD lives) is read."""

    def start(self, tag: str, attrib: dict[str, str]) -> None:
        raise _StopAtRoot

    def end(self, tag: str) -> None:  # pragma: no cover - never reached
        pass

    def data(self, text: str) -> None:  # pragma: no cover
        pass

    def close(self) -> None:
        pass


def _check_xml_part(stream: io.BufferedIOBase, name: str, kind: str, allow_doctype: bool = False) -> None:
    parser = DefusedXMLParser(
        target=_PrologTarget(), forbid_dtd=False, forbid_entities=True, forbid_external=True
    )
    doctype: list[str] = []
    expat = parser.parser  # the expat parser under ElementTree's XMLParser
    previous = expat.StartDoctypeDeclHandler

    def on_doctype(*args: object) -> None:
        doctype.append(str(args[0]))
        if previous is not None:
            previous(*args)

    expat.StartDoctypeDeclHandler = on_doctype
    try:
        while chunk := stream.read(_READ_CHUNK):
            parser.feed(chunk)
        parser.close()
    except _StopAtRoot:
        pass
    except (EntitiesForbidden, ExternalReferenceForbidden) as exc:
        raise ZipRefused(
            f"refused: the {kind} contains XML entity declarations (a billion-laughs attack?) in {name}"
        ) from exc
    except (DTDForbidden, DefusedXmlException) as exc:  # pragma: no cover - forbid_dtd is off
        raise ZipRefused(f"refused: the {kind} contains a DTD in {name}") from exc
    except Exception:  # malformed XML: python-docx reports it with its own message
        return
    if doctype and not allow_doctype:
        raise ZipRefused(f"refused: the {kind} contains a DTD (<!DOCTYPE>) in {name}, which OOXML forbids")


def check_xml_parts(
    archive: zipfile.ZipFile,
    *,
    kind: str = "DOCX",
    suffixes: tuple[str, ...] = _XML_SUFFIXES,
    allow_doctype: bool = False,
) -> None:
    """Raise :class:`ZipRefused` if an XML part (a name ending in one of ``suffixes``) declares
    entities, or a DTD unless ``allow_doctype`` (EPUB's XHTML chapters and NCX carry a plain
    ``<!DOCTYPE>``; OOXML parts never do). Reads prologs only."""
    for info in archive.infolist():
        if info.is_dir() or not info.filename.lower().endswith(suffixes):
            continue
        try:
            with archive.open(info) as stream:
                _check_xml_part(stream, info.filename, kind, allow_doctype)  # type: ignore[arg-type]
        except ZipRefused:
            raise
        except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, RuntimeError):
            continue  # an unreadable part: python-docx fails on it with its own message


def guard_zip(data: bytes, kind: str) -> None:
    """:func:`check_archive` and :func:`check_xml_parts` for a parser, as a :class:`PermanentError`.

    A damaged zip passes: the library that opens it next says what is wrong, in its own words."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            check_archive(archive, kind=kind)
            check_xml_parts(archive, kind=kind)
    except ZipRefused as exc:
        raise PermanentError(str(exc)) from None
    except (zipfile.BadZipFile, ValueError, OSError):
        pass

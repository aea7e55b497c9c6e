"""What ``lorebase ingest`` takes from its arguments: URLs to crawl, and the files of folders with
the external id each gets (local and remote ingest alike)."""

from __future__ import annotations

from pathlib import Path

from lorebase.errors import InvalidInput

#: the parsers' extensions (``registry.SUPPORTED_EXTENSIONS``; a test keeps the two equal without
#: the CLI importing every parser library)
SUFFIXES = {
    ".txt",
    ".text",
    ".md",
    ".markdown",
    ".mkd",
    ".html",
    ".htm",
    ".xhtml",
    ".pdf",
    ".docx",
    ".pptx",
    ".xlsx",
    ".csv",
    ".tsv",
    ".epub",
    ".eml",
    ".png",
    ".jpg",
    ".jpeg",
    ".tif",
    ".tiff",
}


def is_url(raw: str) -> bool:
    return raw.lower().startswith(("http://", "https://"))


def collect(paths: list[str]) -> list[tuple[Path, str]]:
    """Expand folders (recursively, supported suffixes only, hidden files skipped).

    Each file comes with its external id: its path relative to the folder given (or its name), so
    that ingesting an edited file again replaces the earlier version instead of adding a copy."""
    out: list[tuple[Path, str]] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(
                f
                for f in path.rglob("*")
                if f.is_file()
                and f.suffix.lower() in SUFFIXES
                and not any(part.startswith(".") for part in f.relative_to(path).parts)
            )
            out.extend((f, f.relative_to(path).as_posix()) for f in found)
        elif path.is_file():
            out.append((path, path.name))
        else:
            raise InvalidInput(f"{raw}: no such file or folder")
    if not out:
        raise InvalidInput("no supported files found (txt, md, html, pdf, docx, pptx, xlsx, csv, epub, eml)")
    return out


def count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' if n != 1 else ''}" if n else ""

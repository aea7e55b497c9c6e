"""Client filenames are display metadata only: ``sanitize_filename`` keeps the last path component
without control, format or path characters, at most 255 characters."""

from __future__ import annotations

import hashlib

import pytest

from lorebase.api.idempotency import BodyDigest
from lorebase.pipeline.documents import sanitize_filename


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("../../etc/passwd", "passwd"),
        ("..\\x", "x"),
        ("/abs/path", "path"),
        ("C:\\Users\\me\\secret.txt", "secret.txt"),
        ("", "upload"),
        (None, "upload"),
        ("..", "upload"),
        ("dir/", "upload"),
        (" . ", "upload"),
        ("a\x00b\x01c.txt", "a_b_c.txt"),
        ("tab\tnew\nline.md", "tab_new_line.md"),
        ("c1\x85\x9f.md", "c1__.md"),
        ("evil\u202etxt.md", "evil_txt.md"),  # bidi override: no display spoofing
        ("zero\u200bwidth.md", "zero_width.md"),
        ("line\u2028sep.md", "line_sep.md"),
        ("lone\udcffsurrogate.md", "lone_surrogate.md"),
        ("cafe\u0301.md", "caf\u00e9.md"),  # NFC
        ("日本語のファイル.pdf", "日本語のファイル.pdf"),
        ('a:b*c?d"e<f>g|h.txt', "a_b_c_d_e_f_g_h.txt"),
    ],
)
def test_sanitize_filename(raw: str | None, expected: str) -> None:
    assert sanitize_filename(raw) == expected


def test_long_names_are_cut_to_255_characters_keeping_the_extension() -> None:
    name = sanitize_filename("a" * 296 + ".txt")
    assert len(name) == 255 and name.endswith(".txt") and name.startswith("aaa")
    plain = sanitize_filename("b" * 300)
    assert plain == "b" * 255
    wide = sanitize_filename("é" * 400)
    assert len(wide) == 255


def test_sanitized_names_are_idempotent_and_never_paths() -> None:
    for raw in ("../../etc/passwd", "..\\..\\win.ini", "/", "\\\\server\\share\\f", "a/../../b", "\x00"):
        once = sanitize_filename(raw)
        assert sanitize_filename(once) == once
        assert "/" not in once and "\\" not in once and once not in (".", "..") and "\x00" not in once


def test_the_body_digest_matches_whole_body_replacement_chunk_by_chunk() -> None:
    """The idempotency fingerprint of a multipart body read in pieces equals that of the whole
    body with its boundary replaced, wherever the pieces cut the boundary."""
    marker = b"--XyZ123"
    body = (marker + b"\r\nfield\r\n") * 50 + marker + b"--\r\n"
    expected = hashlib.sha256(body.replace(marker, BodyDigest.REPLACEMENT)).hexdigest()
    for size in (1, 2, 3, 7, 8, 9, 64, len(body)):
        digest = BodyDigest("multipart/form-data; boundary=XyZ123")
        for i in range(0, len(body), size):
            digest.update(body[i : i + size])
        digest.update(b"")
        digest._body.update(digest._carry)
        assert digest._body.hexdigest() == expected, size

"""The OCR tests run Debian's real Tesseract: skipped where it is missing, failed on CI."""

from __future__ import annotations

import os
import shutil

import pytest


def require() -> None:
    if shutil.which("tesseract"):
        return
    message = "tesseract is missing: apt-get install tesseract-ocr tesseract-ocr-eng (make test-site)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)

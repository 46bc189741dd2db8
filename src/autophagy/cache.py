"""The cache directory: ``$AUTOPHAGY_CACHE_DIR``, default ``~/.cache/autophagy``.

It holds what can be fetched or recomputed: reference features (``features/``), pretrained
downloads and conversions (``pretrained/``) and CIFAR-10 when ``data.path`` is unset (``cifar10/``).
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "AUTOPHAGY_CACHE_DIR"


def cache_dir(*parts: str) -> Path:
    """The cache directory, or the folder ``parts`` inside it (not created here)."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "autophagy").joinpath(*parts)

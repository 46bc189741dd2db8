"""The project image every KFP component runs in: one reference, pinned, never ``latest``.

The reference is fixed when the pipeline is compiled: an explicit ``--image``, else the
``cluster.image`` of the experiment YAML, else ``$AUTOPHAGY_IMAGE``, else :data:`DEFAULT_IMAGE`
(the release tag of this version). Build and push the image tagged with the git commit
(Dockerfile, k8s/README.md) and pass that reference.
"""

from __future__ import annotations

import os
import re

from autophagy import __version__

IMAGE_ENV = "AUTOPHAGY_IMAGE"
REPOSITORY = "ghcr.io/autophagy/autophagy"
#: The default reference: this version's release tag.
DEFAULT_IMAGE = f"{REPOSITORY}:{__version__}"

_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


class ImageError(ValueError):
    """An image reference that is not pinned (no tag or digest, or ``latest``) or malformed."""


def check_image(ref: str) -> str:
    """Return ``ref`` if it is pinned by a tag other than ``latest`` and/or a sha256 digest."""
    if not isinstance(ref, str) or not ref or any(c.isspace() for c in ref):
        raise ImageError(f"image reference must be a non-empty string without spaces, got {ref!r}")
    name = ref
    digest = _DIGEST.search(ref)
    if digest:
        name = ref[: digest.start()]
    elif "@" in ref:
        raise ImageError(f"image {ref!r}: a digest must look like @sha256:<64 hex digits>")
    last = name.rsplit("/", 1)[-1]
    tag = last.split(":", 1)[1] if ":" in last else None
    if tag is not None and not _TAG.match(tag):
        raise ImageError(f"image {ref!r}: invalid tag {tag!r}")
    if tag == "latest":
        raise ImageError(f"image {ref!r}: never use 'latest'; pin the image by its git-commit tag or digest")
    if tag is None and not digest:
        raise ImageError(f"image {ref!r} has no tag or digest (that means 'latest'); pin it, e.g. {name}:<git-commit>")
    return ref


def resolve_image(explicit: str | None = None) -> str:
    """``explicit``, else ``$AUTOPHAGY_IMAGE``, else :data:`DEFAULT_IMAGE`; checked by :func:`check_image`."""
    return check_image(explicit or os.environ.get(IMAGE_ENV) or DEFAULT_IMAGE)

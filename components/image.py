"""The project image every KFP component runs in: one reference, pinned, never ``latest``.

The reference is fixed when the pipeline is compiled: an explicit ``--image``, else the
``cluster.image`` of the experiment YAML, else ``$AUTOPHAGY_IMAGE``, else :data:`DEFAULT_IMAGE`
(the release tag of this version). No registry publishes that tag yet (:data:`PUBLISHED_IMAGES`
is empty), so falling back to it is refused with the commands that build and push the image
(:data:`BUILD_AND_PUSH`); ``kfp.local``, which runs tasks on this machine, needs no image.
"""

from __future__ import annotations

import os
import re

from autophagy import __version__

IMAGE_ENV = "AUTOPHAGY_IMAGE"
REPOSITORY = "ghcr.io/autophagy/autophagy"
#: The default reference: this version's release tag.
DEFAULT_IMAGE = f"{REPOSITORY}:{__version__}"

#: The default references a registry is known to serve (a release workflow adds its tag here). None yet.
PUBLISHED_IMAGES: frozenset[str] = frozenset()
#: How to make an image the pipeline can run (k8s/README.md, step 2).
BUILD_AND_PUSH = (
    "TAG=$(git rev-parse --short HEAD); "
    "docker build -t REGISTRY/autophagy:$TAG --build-arg GIT_COMMIT=$(git rev-parse HEAD) . && "
    "docker push REGISTRY/autophagy:$TAG (no Docker engine: sudo .ci/build_image.sh, then buildah push), "
    "then pass --image REGISTRY/autophagy:$TAG (or set cluster.image or $AUTOPHAGY_IMAGE)"
)

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


def resolve_image(explicit: str | None = None, require_published: bool = True) -> str:
    """``explicit``, else ``$AUTOPHAGY_IMAGE``, else :data:`DEFAULT_IMAGE`; checked by :func:`check_image`.

    ``require_published``: refuse the fallback to :data:`DEFAULT_IMAGE` unless a registry serves
    it (:data:`PUBLISHED_IMAGES`); a cluster would fail every pod with ImagePullBackOff.
    """
    ref = explicit or os.environ.get(IMAGE_ENV)
    if ref:
        return check_image(ref)
    if require_published and DEFAULT_IMAGE not in PUBLISHED_IMAGES:
        raise ImageError(
            f"no image given, and the default {DEFAULT_IMAGE} is published by no registry (its pods "
            f"would fail with ImagePullBackOff). Build and push the project image: {BUILD_AND_PUSH}"
        )
    return check_image(DEFAULT_IMAGE)

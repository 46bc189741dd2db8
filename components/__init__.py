"""KFP components of autophagy, installed as ``autophagy.components``.

``ops``      the KFP v2 component functions, one per stage (imports kfp);
             ``ops.build_components(image)`` turns them into components running in ``image``
``runtime``  what their bodies call inside the image: a thin adapter from artifact paths to
             :mod:`autophagy.stages` (no kfp, no stage logic)
``image``    the pinned project image reference (``$AUTOPHAGY_IMAGE``, never ``latest``)

Importing this package imports nothing else: the library never depends on kfp.
"""

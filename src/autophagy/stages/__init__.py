"""The stages of a generation, one pure function each: paths in, paths out, a dict back.

``prepare``  real data sets (train/test) from the configured source
``features`` the feature extractor the metrics use (trains digits-net once)
``train``    fit a model for one generation
``sample``   draw a synthetic data set from a model
``mix``      compose the next training set from real and synthetic data
``evaluate`` metrics of a sample set against the real train/test sets

The CLI, the DVC stages, the KFP components and ``loop.py`` all call these; no stage logic
lives anywhere else.
"""

"""The shared core under both the model and the worker.

``errors`` (typed errors with stable codes), ``images`` (decoding with limits and EXIF),
``weights`` (strict checkpoint loading, sha256 identity, deterministic random weights) and
``compose`` (the try-on drawn at the photo's resolution through the GMM's grid). Nothing here
knows about RunPod or training.
"""

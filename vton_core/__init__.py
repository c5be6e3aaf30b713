"""The shared core under both the model and the worker.

``errors`` (typed errors with stable codes), ``images`` (decoding with limits and EXIF) and
``weights`` (strict checkpoint loading, sha256 identity, deterministic random weights). Nothing here
knows about RunPod or training.
"""

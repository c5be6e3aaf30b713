"""The RunPod worker behind ``handler.py``: everything that turns a job into a response.

``settings`` (the only reader of the environment), ``schema`` (the request schema), ``inputs``
(base64 and URL inputs with limits), ``encoding`` (result images), ``delivery`` (inline or S3),
``person_cache``, ``batcher`` (micro-batching of concurrent jobs) and ``sample_images`` (drawn
images for the warm-up and the smoke run).
"""

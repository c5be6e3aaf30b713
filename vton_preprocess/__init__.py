"""Automatic person and cloth preprocessing for CP-VTON+ (see ``preprocess.py``)."""

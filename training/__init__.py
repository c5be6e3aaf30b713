"""Training and evaluation of CP-VTON+ on VITON-format data (never shipped in the image).

``python -m training.train`` (GMM / TOM), ``python -m training.evaluate`` (SSIM, PSNR, IoU,
LPIPS, IS), with ``losses`` and ``metrics``.
"""

"""Audit metrics: how much an anonymised image changed, and where.

``metrics`` has PSNR / SSIM (optionally masked), CIEDE2000 and skin-colour helpers;
``lpips`` the numpy LPIPS (AlexNet, v0.1). All pure numpy / OpenCV, deterministic, CPU
only. The spherical-harmonic lighting fit and shading transfer, which the swap uses too,
live below both in ``refacex.faces.photometry``.
"""

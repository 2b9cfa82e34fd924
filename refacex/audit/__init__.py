"""Audit metrics: how much an anonymised image changed, and where.

``metrics`` has PSNR / SSIM (optionally masked), CIEDE2000 and skin-colour helpers;
``lpips`` the numpy LPIPS (AlexNet, v0.1); ``lighting`` spherical-harmonic lighting
estimation and shading transfer. All pure numpy / OpenCV, deterministic, CPU only.
"""

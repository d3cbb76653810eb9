"""Least-squares similarity transforms (Umeyama) and their inverses, as OpenCV-style ``[2, 3]`` matrices."""

from __future__ import annotations

import numpy as np

FIT_PRECISIONS = ("float64", "float32")  # ``AlignOptions.fit_precision``


def similarity_transform(src: np.ndarray, dst: np.ndarray, *, precision: str = "float64") -> np.ndarray:
    """The rotation + uniform scale + translation (no reflection) that best maps ``src`` onto ``dst``.

    ``src``, ``dst``: ``[K, 2]`` points (x, y), K >= 2. Returns ``[2, 3]`` float64 mapping (x, y, 1) of ``src``'s
    space to ``dst``'s (Umeyama 1991, least squares). ``precision="float32"`` computes it in float32, as the
    official GPEN code does (its matrices are up to 1.5e-4 px off the float64 fit; this comes within about 2e-4 of
    them, and on the official pipeline vectors closer on average).
    """
    if precision not in FIT_PRECISIONS:
        raise ValueError(f"unknown fit precision {precision!r}; choose one of {', '.join(FIT_PRECISIONS)}")
    dtype = np.float32 if precision == "float32" else np.float64
    src = np.asarray(src, dtype=dtype)
    dst = np.asarray(dst, dtype=dtype)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or src.shape[0] < 2:
        raise ValueError(f"similarity_transform needs two [K, 2] point sets with K >= 2, got {src.shape}, {dst.shape}")
    if not (np.isfinite(src).all() and np.isfinite(dst).all()):
        raise ValueError("the landmarks contain NaN or infinite values: no transform can be estimated (check the "
                         "detector's output or the faces given)")
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    covariance = dst_c.T @ src_c / len(src)
    u, singular, vt = np.linalg.svd(covariance)
    sign = np.ones(2, dtype=dtype)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1  # forbid a reflection
    rotation = u @ np.diag(sign) @ vt
    variance = (src_c**2).sum() / len(src)
    if variance <= 1e-12:
        raise ValueError("the landmarks are all in one place: no transform can be estimated")
    scale = (singular * sign).sum() / variance
    matrix = np.zeros((2, 3), dtype=dtype)
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = dst_mean - scale * rotation @ src_mean
    return matrix.astype(np.float64)


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """The exact inverse of a ``[2, 3]`` affine matrix, float64.

    The official pipeline gets its crop -> image matrix from a second Umeyama fit, template -> landmarks, with the
    scale fixed to 1/scale. For a similarity that fit has rotation R^T and translation
    ``mean_src - R^T mean_dst / s``, which is algebraically the inverse of ``[sR | t]`` because the forward fit puts
    ``t = mean_dst - s R mean_src``; so the two differ only by rounding (measured: < 4e-5 against the recorded
    ``tfm_inv`` of the test photos, whose landmarks are float32).
    """
    full = np.vstack([np.asarray(matrix, dtype=np.float64), [0.0, 0.0, 1.0]])
    return np.linalg.inv(full)[:2]

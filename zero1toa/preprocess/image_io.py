"""Load any portrait photo a user may hand us into one well-defined RGB(+alpha) array.

Photos arrive as phone JPEGs with an EXIF rotation flag, PNG cut-outs with transparency,
grayscale scans, 16-bit exports, CMYK print files, palette GIFs, half-copied files. The rest of
the pipeline wants exactly one thing: an upright ``uint8 [H, W, 3]`` sRGB-ish array plus the
alpha channel when the photo has one (a cut-out's alpha is the best foreground mask there is).
Everything else either becomes that with a recorded warning, or fails with an error that names
the file and the problem (see :mod:`zero1toa.preprocess.errors`).

Decoding is forced in full (``Image.load()``) with Pillow's truncated-image tolerance switched
off, so a half-written file fails here and not as a grey band in the avatar's texture.
"""

from __future__ import annotations

import io
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from zero1toa.preprocess.errors import (
    CorruptImage,
    EmptyFile,
    EmptyImage,
    ImageNotFound,
    ImageTooLarge,
    NotAFile,
    NotAnImage,
    PreprocessWarning,
    record_warning,
)

__all__ = ["LoadedImage", "load_image", "decode_image"]

_TRUNCATION_LOCK = threading.Lock()
_EXIF_ORIENTATION = 0x0112
_HINTS = {
    ".heic": " (HEIC/HEIF needs the pillow-heif plugin; convert the photo to JPEG or PNG)",
    ".heif": " (HEIC/HEIF needs the pillow-heif plugin; convert the photo to JPEG or PNG)",
    ".avif": " (AVIF may need a newer Pillow; convert the photo to JPEG or PNG)",
}


@dataclass(eq=False)  # holds arrays
class LoadedImage:
    """An upright 8-bit RGB image, its alpha if it had one, and what was done to get there."""

    rgb: np.ndarray  # [H, W, 3] uint8
    alpha: np.ndarray | None  # [H, W] uint8, 255 = opaque; None without transparency (an alpha opaque everywhere counts as none)
    path: Path | None
    original_mode: str  # Pillow mode of the file, e.g. "RGB", "RGBA", "L", "I;16", "CMYK", "P"
    exif_transposed: bool  # True when an EXIF orientation other than "normal" was applied
    warnings: list[PreprocessWarning] = field(default_factory=list)
    format: str | None = None  # Pillow format name, e.g. "JPEG", "PNG", "WEBP"
    original_size: tuple[int, int] = (0, 0)  # (width, height) as stored, before EXIF rotation

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    def rgba(self) -> np.ndarray:
        """[H, W, 4] uint8 with alpha (opaque when the file had none)."""
        a = self.alpha if self.alpha is not None else np.full(self.rgb.shape[:2], 255, np.uint8)
        return np.concatenate([self.rgb, a[..., None]], axis=2)


def load_image(path: Path | str) -> LoadedImage:
    """Read ``path`` into a :class:`LoadedImage`, or raise a :class:`PreprocessError` naming it."""
    path = Path(path)
    if not path.exists():
        raise ImageNotFound(path, "no such file")
    if path.is_dir():
        raise NotAFile(path, "is a directory, expected an image file")
    if not path.is_file():
        raise NotAFile(path, "is not a regular file")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise NotAFile(path, f"cannot be read ({e.strerror or e})") from e
    return decode_image(data, path)


def decode_image(data: bytes, path: Path | str | None = None) -> LoadedImage:
    """Decode image ``data`` (the bytes of a file); ``path`` is only used in messages."""
    path = None if path is None else Path(path)
    hint = _HINTS.get(path.suffix.lower(), "") if path is not None else ""
    if len(data) == 0:
        raise EmptyFile(path, "the file is empty (0 bytes)")
    warnings: list[PreprocessWarning] = []

    img = _open_fully(data, path, hint)
    fmt = img.format
    original_mode = img.mode
    original_size = img.size
    if img.width == 0 or img.height == 0:
        raise EmptyImage(path, f"the image has zero size ({img.width}x{img.height})")

    if getattr(img, "n_frames", 1) > 1:
        record_warning(warnings, "multi_frame", f"the {fmt} file holds {img.n_frames} frames; using the first", path)

    # EXIF orientation (phone photos are stored sideways with a flag).
    orientation = 1
    try:
        orientation = int(img.getexif().get(_EXIF_ORIENTATION, 1) or 1)
    except Exception:  # malformed EXIF must not stop us; the pixels are fine
        orientation = 1
    exif_transposed = False
    if orientation not in (0, 1):
        transposed = ImageOps.exif_transpose(img)
        if transposed is not None:
            img = transposed
            exif_transposed = True

    high_bit = _bit_depth_over_8(img, data, fmt)
    rgb, alpha = _to_rgb_alpha(img, path, warnings, high_bit)

    if alpha is not None and int(alpha.min()) == 255:
        alpha = None  # an alpha channel that is opaque everywhere says nothing about the subject

    return LoadedImage(
        rgb=np.ascontiguousarray(rgb),
        alpha=None if alpha is None else np.ascontiguousarray(alpha),
        path=path,
        original_mode=original_mode,
        exif_transposed=exif_transposed,
        warnings=warnings,
        format=fmt,
        original_size=original_size,
    )


def _open_fully(data: bytes, path: Path | None, hint: str) -> Image.Image:
    """Open and fully decode; map Pillow's many failure modes onto our errors."""
    try:
        probe = Image.open(io.BytesIO(data))
    except UnidentifiedImageError as e:
        size = _header_size(data)
        if size is not None and 0 in size:
            raise EmptyImage(path, f"the image has zero size ({size[0]}x{size[1]})") from e
        raise NotAnImage(path, f"not an image in any format Pillow can read{hint}") from e
    except Image.DecompressionBombError as e:
        raise ImageTooLarge(path, f"the image is too large to decode safely ({e})") from e
    except (OSError, SyntaxError, ValueError) as e:
        raise CorruptImage(path, f"the image header is damaged ({e})") from e
    fmt = probe.format
    # verify() checks structure and checksums (e.g. PNG chunk CRCs) without decoding pixels.
    try:
        probe.verify()
    except Exception as e:
        raise CorruptImage(path, f"the {fmt} file is damaged or truncated ({e})") from e
    with _TRUNCATION_LOCK:
        previous = ImageFile.LOAD_TRUNCATED_IMAGES
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        try:
            img = Image.open(io.BytesIO(data))
            img.load()
        except Image.DecompressionBombError as e:
            raise ImageTooLarge(path, f"the image is too large to decode safely ({e})") from e
        except Exception as e:
            raise CorruptImage(path, f"the {fmt} file is truncated or damaged and cannot be fully decoded ({e})") from e
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = previous
    return img


def _header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) read from a PNG or GIF header, for files Pillow refuses to open.

    Pillow will not identify a zero-width PNG/GIF at all; reading the header lets us say "zero
    size" instead of the misleading "not an image".
    """
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and len(data) >= 24:
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        return int.from_bytes(data[6:8], "little"), int.from_bytes(data[8:10], "little")
    return None


def _bit_depth_over_8(img: Image.Image, data: bytes, fmt: str | None) -> bool:
    """True when the stored samples have more than 8 bits.

    Pillow decodes 16-bit RGB(A) PNGs straight into 8-bit "RGB"/"RGBA" (so the mode cannot tell);
    the PNG header's bit-depth byte can.
    """
    if img.mode.startswith("I") or img.mode == "F":
        return True
    if fmt == "PNG" and len(data) > 24 and data[12:16] == b"IHDR":
        return data[24] == 16
    return False


def _to_rgb_alpha(img: Image.Image, path: Path | None, warnings: list[PreprocessWarning], high_bit: bool) -> tuple[np.ndarray, np.ndarray | None]:
    mode = img.mode
    alpha: np.ndarray | None = None

    if high_bit:
        record_warning(warnings, "high_bit_depth", f"{mode} image with more than 8 bits per sample converted to 8-bit", path)

    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        arr = np.asarray(img).astype(np.float64)
        if mode == "F":
            arr = arr * 255.0 if arr.max() <= 1.0 else arr  # float images: assume [0, 1] or [0, 255]
        elif arr.max() > 255:
            arr = arr / 257.0  # 16-bit range onto 8-bit (65535 -> 255)
        gray = np.clip(np.round(arr), 0, 255).astype(np.uint8)
        record_warning(warnings, "grayscale_converted", "grayscale image converted to RGB (colour is needed for the avatar's texture)", path)
        return np.repeat(gray[..., None], 3, axis=2), None

    if mode in ("1", "L", "LA", "La"):
        record_warning(warnings, "grayscale_converted", "grayscale image converted to RGB (colour is needed for the avatar's texture)", path)
        if mode in ("LA", "La"):
            la = np.asarray(img.convert("LA"))
            alpha = la[..., 1].copy()
            gray = la[..., 0]
        else:
            gray = np.asarray(img.convert("L"))
        return np.repeat(gray[..., None], 3, axis=2), alpha

    if mode == "CMYK":
        record_warning(warnings, "cmyk_converted", "CMYK image converted to RGB without colour management; colours may shift", path)
        return np.asarray(img.convert("RGB")), None

    has_alpha = mode in ("RGBA", "RGBa", "PA") or (mode == "P" and "transparency" in img.info) or (mode in ("RGB", "L") and "transparency" in img.info)
    if has_alpha:
        rgba = np.asarray(img.convert("RGBA"))
        return rgba[..., :3].copy(), rgba[..., 3].copy()
    if mode != "RGB":
        img = img.convert("RGB")
    return np.asarray(img), None

"""Image loading: every kind of photo a user may hand us becomes upright uint8 RGB (+alpha),
and every unusable file fails with an error that names it."""

from __future__ import annotations

import logging
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from zero1toa.preprocess.errors import (
    CorruptImage,
    EmptyFile,
    EmptyImage,
    ImageNotFound,
    NotAFile,
    NotAnImage,
    PreprocessError,
    PreprocessWarning,
    record_warning,
)
from zero1toa.preprocess.image_io import decode_image, load_image
from zero1toa.sample import write_sample_portrait


def _codes(loaded) -> list[str]:
    return [w.code for w in loaded.warnings]


# -- the sample -------------------------------------------------------------------------------


def test_sample_portrait_is_the_astronaut(portrait: np.ndarray, tmp_path: Path) -> None:
    assert portrait.shape == (512, 512, 3) and portrait.dtype == np.uint8
    assert 60 < portrait.mean() < 200 and portrait.std() > 30  # a real photo, not a blank
    out = write_sample_portrait(tmp_path / "sub" / "astronaut.png")
    assert out.is_file() and not list(out.parent.glob(".*.tmp"))
    np.testing.assert_array_equal(load_image(out).rgb, portrait)
    with pytest.raises(ValueError, match="unknown image suffix"):
        write_sample_portrait(tmp_path / "astronaut.xyz")


# -- formats that load ------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp", ".bmp", ".tiff"])
def test_common_formats_load_as_rgb(portrait: np.ndarray, tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"p{suffix}"
    Image.fromarray(portrait).save(path)
    loaded = load_image(path)
    assert loaded.rgb.shape == (512, 512, 3) and loaded.rgb.dtype == np.uint8
    assert loaded.alpha is None and loaded.path == path and not loaded.exif_transposed
    assert loaded.warnings == []
    assert np.abs(loaded.rgb.astype(int) - portrait).mean() < 6  # lossy formats stay close


def test_rgba_keeps_alpha(portrait: np.ndarray, tmp_path: Path) -> None:
    alpha = np.zeros((512, 512), np.uint8)
    cv2.circle(alpha, (256, 220), 150, 255, -1)
    path = tmp_path / "cutout.png"
    Image.fromarray(np.dstack([portrait, alpha])).save(path)
    loaded = load_image(path)
    assert loaded.original_mode == "RGBA"
    np.testing.assert_array_equal(loaded.alpha, alpha)
    np.testing.assert_array_equal(loaded.rgb, portrait)
    assert loaded.rgba().shape == (512, 512, 4)


def test_opaque_alpha_is_dropped(portrait: np.ndarray, tmp_path: Path) -> None:
    path = tmp_path / "opaque.png"
    Image.fromarray(portrait).convert("RGBA").save(path)
    assert load_image(path).alpha is None  # says nothing about the subject


def test_palette_with_transparency_keeps_alpha(portrait: np.ndarray, tmp_path: Path) -> None:
    img = Image.fromarray(portrait).quantize(64)
    arr = np.array(img)
    arr[:40] = 0  # the top band uses palette entry 0 ...
    img = Image.fromarray(arr, mode="P")
    img.putpalette(Image.fromarray(portrait).quantize(64).getpalette())
    path = tmp_path / "palette.png"
    img.save(path, transparency=0)  # ... which is transparent
    loaded = load_image(path)
    assert loaded.original_mode == "P" and loaded.alpha is not None
    assert (loaded.alpha[:40] == 0).all() and loaded.alpha[100:].mean() > 200


def test_animated_gif_uses_the_first_frame_with_warning(portrait: np.ndarray, tmp_path: Path) -> None:
    frames = [Image.fromarray(portrait), Image.fromarray(255 - portrait)]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100)
    loaded = load_image(path)
    assert "multi_frame" in _codes(loaded) and loaded.rgb.shape == (512, 512, 3)
    assert np.abs(loaded.rgb.astype(int) - portrait).mean() < 20  # the first frame (palette-quantised)


def test_grayscale_converts_with_warning(portrait: np.ndarray, tmp_path: Path, caplog) -> None:
    path = tmp_path / "gray.png"
    Image.fromarray(portrait).convert("L").save(path)
    with caplog.at_level(logging.WARNING, logger="zero1toa.preprocess"):
        loaded = load_image(path)
    assert loaded.rgb.shape == (512, 512, 3)
    assert (loaded.rgb[..., 0] == loaded.rgb[..., 1]).all() and (loaded.rgb[..., 1] == loaded.rgb[..., 2]).all()
    assert _codes(loaded) == ["grayscale_converted"]
    assert "gray.png" in loaded.warnings[0].message and "gray.png" in caplog.text


def test_grayscale_with_alpha_keeps_alpha(portrait: np.ndarray, tmp_path: Path) -> None:
    gray = np.array(Image.fromarray(portrait).convert("L"))
    alpha = np.full_like(gray, 255)
    alpha[:, :100] = 0
    path = tmp_path / "la.png"
    Image.fromarray(np.dstack([gray, alpha]), mode="LA").save(path)
    loaded = load_image(path)
    assert "grayscale_converted" in _codes(loaded)
    np.testing.assert_array_equal(loaded.alpha, alpha)


def test_16bit_grayscale_png_converts(tmp_path: Path) -> None:
    ramp = np.linspace(0, 65535, 64 * 256).reshape(64, 256).astype(np.uint16)
    path = tmp_path / "g16.png"
    assert cv2.imwrite(str(path), ramp)
    loaded = load_image(path)
    assert set(_codes(loaded)) == {"high_bit_depth", "grayscale_converted"}
    assert loaded.rgb.dtype == np.uint8 and loaded.rgb.shape == (64, 256, 3)
    assert loaded.rgb[0, 0, 0] == 0 and loaded.rgb[-1, -1, 0] == 255
    expected = np.round(ramp / 257.0).astype(np.uint8)
    assert np.abs(loaded.rgb[..., 0].astype(int) - expected).max() <= 1


def test_16bit_rgb_png_converts(portrait: np.ndarray, tmp_path: Path) -> None:
    path = tmp_path / "rgb16.png"
    assert cv2.imwrite(str(path), (portrait.astype(np.uint16) * 257)[..., ::-1])  # OpenCV writes BGR
    loaded = load_image(path)
    assert _codes(loaded) == ["high_bit_depth"]
    np.testing.assert_array_equal(loaded.rgb, portrait)


def test_cmyk_converts(portrait: np.ndarray, tmp_path: Path) -> None:
    path = tmp_path / "print.jpg"
    Image.fromarray(portrait).convert("CMYK").save(path, quality=95)
    loaded = load_image(path)
    assert loaded.original_mode == "CMYK" and loaded.rgb.shape == (512, 512, 3)
    assert "cmyk_converted" in _codes(loaded)
    assert np.abs(loaded.rgb.astype(int) - portrait).mean() < 10


@pytest.mark.parametrize("orientation,undo", [(6, lambda a: np.rot90(a, k=-1)), (8, lambda a: np.rot90(a, k=1)), (3, lambda a: a[::-1, ::-1])])
def test_exif_orientation_is_applied(portrait: np.ndarray, tmp_path: Path, orientation: int, undo) -> None:
    """A phone stores the sensor image plus a flag; we must show what the user saw."""
    stored = np.ascontiguousarray(portrait[:, :384])  # non-square, so a missed rotation shows in the shape
    img = Image.fromarray(stored)
    exif = img.getexif()
    exif[0x0112] = orientation
    path = tmp_path / f"phone_{orientation}.jpg"
    img.save(path, exif=exif.tobytes(), quality=95)
    loaded = load_image(path)
    expected = np.ascontiguousarray(undo(stored))
    assert loaded.exif_transposed
    assert loaded.original_size == (384, 512)
    assert loaded.rgb.shape == expected.shape
    assert np.abs(loaded.rgb.astype(int) - expected).mean() < 6


# -- files that must fail, naming the file -----------------------------------------------------


def _expect(error: type[PreprocessError], path: Path, words: str) -> PreprocessError:
    with pytest.raises(error) as info:
        load_image(path)
    err = info.value
    assert str(path) in str(err) and err.path == path
    assert words in err.problem
    return err


def test_missing_file(tmp_path: Path) -> None:
    _expect(ImageNotFound, tmp_path / "nope.jpg", "no such file")


def test_directory(tmp_path: Path) -> None:
    _expect(NotAFile, tmp_path, "is a directory")


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    err = _expect(EmptyFile, path, "empty")
    assert isinstance(err, NotAnImage)


def test_text_file_is_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("this is not a picture\n" * 20)
    _expect(NotAnImage, path, "not an image")


def test_heic_hint(tmp_path: Path) -> None:
    path = tmp_path / "IMG_0001.HEIC"
    path.write_bytes(b"\x00\x00\x00\x18ftypheic" + b"\x00" * 64)
    _expect(NotAnImage, path, "pillow-heif")


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_truncated_files_fail(portrait: np.ndarray, tmp_path: Path, suffix: str) -> None:
    full = tmp_path / f"full{suffix}"
    Image.fromarray(portrait).save(full)
    data = full.read_bytes()
    for frac in (0.5, 0.9):
        path = tmp_path / f"cut{int(frac * 100)}{suffix}"
        path.write_bytes(data[: int(len(data) * frac)])
        _expect(CorruptImage, path, "truncated")


def test_truncated_file_fails_even_if_pillow_is_told_to_tolerate(portrait: np.ndarray, tmp_path: Path, monkeypatch) -> None:
    from PIL import ImageFile

    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    path = tmp_path / "cut.jpg"
    Image.fromarray(portrait).save(path)
    path.write_bytes(path.read_bytes()[:20000])
    _expect(CorruptImage, path, "truncated")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # the caller's setting is restored


def test_png_with_bad_checksum_fails(portrait: np.ndarray, tmp_path: Path) -> None:
    path = tmp_path / "flipped.png"
    Image.fromarray(portrait).save(path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one corrupted byte inside IDAT
    path.write_bytes(bytes(data))
    _expect(CorruptImage, path, "damaged")


def _png_bytes(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def test_zero_size_image(tmp_path: Path) -> None:
    path = tmp_path / "zero.png"
    path.write_bytes(_png_bytes(0, 10))
    _expect(EmptyImage, path, "zero size")


def test_decode_without_path_says_in_memory() -> None:
    with pytest.raises(NotAnImage, match="<in-memory image>"):
        decode_image(b"garbage" * 10)


def test_errors_and_warnings_serialise(tmp_path: Path) -> None:
    err = ImageNotFound(tmp_path / "x.jpg", "no such file")
    assert err.to_dict() == {"code": "not_found", "path": str(tmp_path / "x.jpg"), "problem": "no such file"}
    sink: list[PreprocessWarning] = []
    w = record_warning(sink, "demo", "something odd", tmp_path / "x.jpg")
    assert sink == [w] and w.to_dict()["code"] == "demo" and "x.jpg" in w.message

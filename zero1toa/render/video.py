"""Write frame sequences people can look at: MP4 (imageio-ffmpeg), GIF, and contact sheets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..utils.io import atomic_path


def to_uint8_frames(frames: Tensor | np.ndarray) -> np.ndarray:
    """[F, 3, H, W] float in [0, 1] (or [F, H, W, 3] uint8) -> [F, H, W, 3] uint8."""
    if isinstance(frames, torch.Tensor):
        arr = (frames.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()
        return arr.permute(0, 2, 3, 1).numpy() if arr.shape[1] in (1, 3) else arr.numpy()
    return np.asarray(frames, dtype=np.uint8)


def write_video(path: Path, frames: Tensor | np.ndarray, fps: int = 24) -> Path:
    """MP4 (H.264 via imageio-ffmpeg) or GIF, chosen by the suffix; written atomically."""
    import imageio.v2 as imageio

    path = Path(path)
    arr = to_uint8_frames(frames)
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, -1)
    suffix = path.suffix.lower()
    with atomic_path(path) as tmp:
        if suffix == ".gif":
            imageio.mimsave(tmp, list(arr), format="GIF", duration=1000.0 / fps, loop=0)
        elif suffix == ".mp4":
            # even sizes for yuv420p; macro_block_size=1 keeps our exact size when already even
            h, w = arr.shape[1:3]
            if h % 2 or w % 2:
                arr = np.pad(arr, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
            writer = imageio.get_writer(tmp, format="FFMPEG", fps=fps, codec="libx264", quality=8, macro_block_size=1, pixelformat="yuv420p")
            try:
                for frame in arr:
                    writer.append_data(frame)
            finally:
                writer.close()
        else:
            raise ValueError(f"{path}: videos are written as .mp4 or .gif")
    return path


def read_video(path: Path, max_frames: int | None = None) -> tuple[np.ndarray, float]:
    """Decode a video frame by frame (bounded memory) -> ([F, H, W, 3] uint8, fps)."""
    import imageio.v2 as imageio

    reader = imageio.get_reader(Path(path))
    try:
        fps = float(reader.get_meta_data().get("fps", 25.0))
        frames = []
        for i, frame in enumerate(reader):
            if max_frames is not None and i >= max_frames:
                break
            frames.append(np.asarray(frame)[..., :3])
    finally:
        reader.close()
    if not frames:
        raise ValueError(f"{path}: no frames could be decoded")
    return np.stack(frames), fps


def contact_sheet(rows: list[list[np.ndarray]], labels_rows: list[str] | None = None, labels_cols: list[str] | None = None, pad: int = 4) -> np.ndarray:
    """Grid of equally sized uint8 images with optional row/column labels -> uint8 image."""
    import cv2

    h, w = rows[0][0].shape[:2]
    ncol = max(len(r) for r in rows)
    top = 18 if labels_cols else 0
    left = 90 if labels_rows else 0
    H = top + len(rows) * (h + pad) + pad
    W = left + ncol * (w + pad) + pad
    sheet = np.full((H, W, 3), 255, np.uint8)
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            y, x = top + pad + i * (h + pad), left + pad + j * (w + pad)
            sheet[y : y + h, x : x + w] = img[..., :3]
        if labels_rows:
            cv2.putText(sheet, labels_rows[i][:12], (4, top + pad + i * (h + pad) + h // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    if labels_cols:
        for j, text in enumerate(labels_cols):
            cv2.putText(sheet, text[:14], (left + pad + j * (w + pad) + 2, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return sheet


def write_png(path: Path, image: np.ndarray) -> Path:
    from PIL import Image

    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")
    return path

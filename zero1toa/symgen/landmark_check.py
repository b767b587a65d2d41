"""Landmark re-extraction: does a generated frame show the face it was asked for?

Zero-1-to-A's loop extracts MediaPipe landmarks from what the video model generated and uses
them to guide later generations. Here the shipped face mesh runs on every generated frame; the
extracted landmarks are stored with the frame, and compared with the requested ones (the head
model's landmarks projected by the frame's camera): the mean point distance over the
inter-ocular distance of the requested face. A frame whose error exceeds ``max_error``, or in
which no face is found, fails; the round regenerates it once and then down-weights or drops it,
and the dataset records why (:mod:`.round`).

Views beyond ``max_yaw_deg`` are not checked: the shipped detector stops finding faces between
45 and 60 degrees, so "no face" there says nothing about the frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from torch import Tensor

#: MediaPipe mesh indices of the outer eye corners (the error's normalisation).
_RIGHT_EYE_OUTER, _LEFT_EYE_OUTER = 33, 263


@dataclass
class FrameCheck:
    checked: bool  # False: outside the detector's range (not an error)
    found: bool
    error: float | None  # mean distance / inter-ocular distance (None: not checked or no face)
    points: np.ndarray | None  # [468, 2] extracted, frame pixels

    def failed(self, max_error: float) -> str | None:
        """Why the frame fails ("no face found", "landmark error 0.31 > 0.12"), or None."""
        if not self.checked:
            return None
        if not self.found:
            return "no face found"
        if self.error is not None and self.error > max_error:
            return f"landmark error {self.error:.3f} > {max_error:g}"
        return None


class LandmarkChecker:
    """The face mesh on generated frames (loaded on first use)."""

    def __init__(self, max_yaw_deg: float = 40.0, analysis_size: int = 256) -> None:
        self.max_yaw_deg, self.analysis_size = max_yaw_deg, analysis_size
        self._runner = None

    def _extract(self, rgb: np.ndarray) -> np.ndarray | None:
        import cv2

        from ..preprocess.errors import PreprocessError, quiet_photo_warnings
        from ..preprocess.facemesh import FaceMeshRunner, find_face

        if self._runner is None:
            self._runner = FaceMeshRunner(num_threads=2)
        k = max(1, math.ceil(self.analysis_size / max(1, rgb.shape[1])))
        img = cv2.resize(rgb, (rgb.shape[1] * k, rgb.shape[0] * k), interpolation=cv2.INTER_CUBIC) if k > 1 else rgb
        try:
            with quiet_photo_warnings():
                res = find_face(np.ascontiguousarray(img), runner=self._runner, min_face_px=0.0, with_iris=False)
        except PreprocessError:
            return None
        return res.landmarks.points[:, :2].astype(np.float64) / k

    def check(self, frames: Tensor, requested_uv: Tensor, landmark_ids: list[int], yaws_deg: np.ndarray) -> list[FrameCheck]:
        """frames [F, 3, H, W]; requested_uv [F, L, 2] pixels (rows named by ``landmark_ids``)."""
        rows = [r for r, m in enumerate(landmark_ids) if 0 <= m < 468]
        mesh = [landmark_ids[r] for r in rows]
        if _RIGHT_EYE_OUTER not in mesh or _LEFT_EYE_OUTER not in mesh:
            raise ValueError("the head's landmark embedding lacks the outer eye corners (33, 263) the check normalises by")
        re, le = mesh.index(_RIGHT_EYE_OUTER), mesh.index(_LEFT_EYE_OUTER)
        u8 = (frames.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()
        req = requested_uv.detach().cpu().numpy()
        out = []
        for f in range(len(u8)):
            if abs(float(yaws_deg[f])) > self.max_yaw_deg:
                out.append(FrameCheck(False, False, None, None))
                continue
            pts = self._extract(u8[f])
            if pts is None:
                out.append(FrameCheck(True, False, None, None))
                continue
            want = req[f][rows]
            iod = float(np.linalg.norm(want[re] - want[le]))
            err = float(np.linalg.norm(pts[mesh] - want, axis=1).mean() / max(iod, 1e-6))
            out.append(FrameCheck(True, True, err, pts))
        return out

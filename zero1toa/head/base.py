"""The one interface every head model implements.

A head model is a triangle mesh that can be animated from (shape, expression, pose). Gaussians
bind to its triangles, cameras are fitted to its landmarks, the generators draw landmark maps
from it, and the schedules drive its expression space. FLAME and the built-in face-mesh rig both
implement :class:`HeadModel`, so nothing downstream knows which one it has.

Pose is FLAME's: axis-angle rotations of the root (global), neck, jaw and both eyes, plus a
global translation applied last. Expressions are a vector in the model's expression space; a
model with named expressions (the built-in rig) lists their names, a PCA model (FLAME) does not.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, fields
from pathlib import Path

import torch
from torch import Tensor

#: Joint order shared by all head models (parents: root <- neck <- jaw / eyes).
JOINT_NAMES: tuple[str, ...] = ("root", "neck", "jaw", "eye_left", "eye_right")
JOINT_PARENTS: list[int] = [-1, 0, 1, 1, 1]

#: The landmark convention used for landmark maps and fitting: MediaPipe's 468-point face mesh,
#: optionally followed by the 10 iris points (468-477) of the attention/iris models.
MEDIAPIPE_468 = "mediapipe468"


@dataclass
class HeadPose:
    """Batched pose, B frames. All rotations are axis-angle in radians."""

    rotation: Tensor  # [B, 3] global (root) rotation
    neck: Tensor  # [B, 3]
    jaw: Tensor  # [B, 3]
    eyes: Tensor  # [B, 6] left eye then right eye
    translation: Tensor  # [B, 3] metres, applied after rotation

    @staticmethod
    def neutral(batch: int = 1, device: torch.device | str = "cpu") -> "HeadPose":
        z3 = torch.zeros(batch, 3, device=device)
        return HeadPose(z3.clone(), z3.clone(), z3.clone(), torch.zeros(batch, 6, device=device), z3.clone())

    def __len__(self) -> int:
        return self.rotation.shape[0]

    def __getitem__(self, index: int | slice | Tensor) -> "HeadPose":
        if isinstance(index, int):
            index = slice(index, index + 1)
        return HeadPose(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def to(self, device: torch.device | str) -> "HeadPose":
        return HeadPose(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def as_vector(self) -> Tensor:
        """[B, 18]: rotation, neck, jaw, eyes, translation (the column order of pose files)."""
        return torch.cat([self.rotation, self.neck, self.jaw, self.eyes, self.translation], -1)

    @staticmethod
    def from_vector(vec: Tensor) -> "HeadPose":
        if vec.dim() == 1:
            vec = vec[None]
        if vec.shape[-1] != 18:
            raise ValueError(f"a pose vector has 18 values (rotation 3, neck 3, jaw 3, eyes 6, translation 3), got {vec.shape[-1]}")
        r, n, j, e, t = vec.split([3, 3, 3, 6, 3], -1)
        return HeadPose(r, n, j, e, t)

    @staticmethod
    def cat(items: list["HeadPose"]) -> "HeadPose":
        return HeadPose(**{f.name: torch.cat([getattr(p, f.name) for p in items]) for f in fields(HeadPose)})

    def joint_rotations(self) -> Tensor:
        """[B, 5, 3] axis-angle in JOINT_NAMES order."""
        return torch.stack([self.rotation, self.neck, self.jaw, self.eyes[:, :3], self.eyes[:, 3:]], 1)


@dataclass
class LandmarkEmbedding:
    """Landmarks as barycentric points on mesh triangles.

    ``indices`` says which landmark of the convention each row is (e.g. FLAME's MediaPipe
    embedding covers only 105 of the 468 points), so drawers and fitters use what exists.
    """

    face_ids: Tensor  # [L] triangle index per landmark
    barycentric: Tensor  # [L, 3]
    indices: Tensor  # [L] landmark numbers in the convention
    convention: str = MEDIAPIPE_468


class HeadModel(ABC):
    """Abstract head model: a mesh animated by (shape, expression, pose)."""

    #: short identifier recorded in manifests ("facemesh-rig", "flame2023", ...)
    name: str
    #: version of the asset/rig builder, for lineage and licence records
    version: str
    #: licence note for outputs derived from this head (FLAME is non-commercial)
    licence: str

    faces: Tensor  # [F, 3] long
    landmark_embedding: LandmarkEmbedding

    @property
    @abstractmethod
    def num_vertices(self) -> int: ...

    @property
    @abstractmethod
    def expression_dim(self) -> int: ...

    @property
    def expression_names(self) -> list[str] | None:
        """Names of the expression coefficients, or None for a PCA space."""
        return None

    @property
    def shape_dim(self) -> int:
        return 0

    @abstractmethod
    def animate(self, expression: Tensor, pose: HeadPose, shape: Tensor | None = None) -> Tensor:
        """Vertices [B, V, 3] for expression [B, E] and pose (B frames).

        ``shape`` [B, S] overrides the model's fitted identity; None uses it.
        """

    def neutral_vertices(self) -> Tensor:
        """[V, 3] vertices at zero expression and neutral pose (fitted identity)."""
        return self.animate(torch.zeros(1, self.expression_dim), HeadPose.neutral(1))[0]

    def landmarks(self, vertices: Tensor) -> Tensor:
        """Landmark positions [B, L, 3] on animated vertices [B, V, 3] (rows follow the embedding)."""
        emb = self.landmark_embedding
        tri = vertices[:, self.faces[emb.face_ids]]  # [B, L, 3, 3]
        return (tri * emb.barycentric[None, :, :, None]).sum(2)

    def neutral_expression(self, batch: int = 1) -> Tensor:
        return torch.zeros(batch, self.expression_dim)

    def expression_preset(self, name: str, magnitude: float = 1.0) -> tuple[Tensor, Tensor]:
        """A named expression as (expression [E], jaw axis-angle [3]).

        Names every head understands: neutral, jaw_open, smile, frown, pucker, blink, surprise.
        Heads with named bases implement these directly; PCA heads approximate them.
        """
        raise NotImplementedError(f"{self.name} has no expression presets")

    @abstractmethod
    def save(self, path: Path) -> None:
        """Write everything needed to rebuild this head (atomically)."""


def load_head(path: Path) -> HeadModel:
    """Load a head saved by :meth:`HeadModel.save` (dispatches on the stored kind)."""
    from .registry import load_head as _load

    return _load(Path(path))

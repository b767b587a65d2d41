"""The built-in head rig: the portrait's own 468-point face mesh, completed into a closed head.

Why it exists: FLAME may not be redistributed, so a project that must run out of the box needs a
head model made from nothing but the portrait. The face-mesh model already gives a dense,
consistently-ordered surface of the face with relative depth; this module turns it into an
animatable head, one part per module:

- the face (:mod:`.rig_face`): the 468 landmarks unprojected through the reference camera (so
  the rig reprojects onto the detected landmarks by construction), triangulated with MediaPipe's
  topology; the face's own rotation in the photo is moved into the reference camera, so the rig
  is always upright and frontal at neutral pose;
- a skull (:mod:`.rig_skull`): rings swept from the face outline around an ellipsoid to the back
  of the head, sized against the portrait's foreground mask so hair volume is covered;
- eyeballs (:mod:`.rig_eyes`) filling the eye openings, rotating about their centres;
- the mouth interior (:mod:`.rig_mouth`) behind the lips, opening with the jaw;
- a neck, an upper torso and backdrop patches (:mod:`.rig_body`): the crop shows the shoulders;
- linear blend skinning over FLAME's joints (root, neck, jaw, eyes; the neck carries the skull)
  with weights derived from the landmark layout, and a small named expression basis
  (:mod:`.rig_expressions`) scaled by the face width so the same magnitudes fit every face.

All geometry lives in the canonical head frame of :mod:`zero1toa.render.camera` (metres, +x
subject's left, +y up, +z forward).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..render.camera import Cameras
from ..utils.io import atomic_dir, read_json, write_json_atomic
from . import topology as T
from .base import JOINT_NAMES, JOINT_PARENTS, MEDIAPIPE_468, HeadModel, HeadPose, LandmarkEmbedding
from .lbs import axis_angle_to_matrix, linear_blend_skinning, rigid_chain
from .rig_body import BodyAxis, add_backdrop, add_neck_and_torso
from .rig_expressions import EXPRESSION_NAMES, JAW_OPEN_RAD, expression_blendshapes, face_jaw_weights
from .rig_eyes import Eyeball, add_eyeballs
from .rig_face import lift_face
from .rig_mesh import JAW, PART_NAMES, RigMesh, jaw_blend_weights
from .rig_mouth import add_mouth
from .rig_skull import add_skull

__all__ = [
    "EXPRESSION_NAMES",
    "JAW_OPEN_RAD",
    "PART_NAMES",
    "RIG_KIND",
    "RIG_VERSION",
    "FaceMeshRig",
    "RigBuild",
    "RigConfig",
    "build_facemesh_rig",
]

RIG_KIND = "facemesh-rig"
RIG_VERSION = "2"  # 2: mouth interior (closed cavity, teeth, tongue); new part labels


@dataclass
class RigConfig:
    """How the face mesh is completed into a head. Lengths in metres unless noted."""

    face_width_m: float = 0.15  # distance between landmarks 234 and 454 (face outline at the ears)
    fov_deg: float = 20.0  # reference camera field of view: the face mesh is near weak-perspective
    skull_rings: int = 10  # rings swept from the face outline to the back of the head
    neck_segments: int = 32  # vertices per neck/torso ring
    eyeball_radius_m: float = 0.012
    iris_radius_m: float = 0.0055
    mouth_depth_m: float = 0.028  # lips' centre to the mouth cavity's back wall (>= 0.13 W behind every lip vertex)
    fit_skull_to_mask: bool = True


@dataclass
class RigBuild:
    """What :func:`build_facemesh_rig` returns: the rig, the camera of the photo, and diagnostics."""

    rig: "FaceMeshRig"
    camera: Cameras  # the reference view (1 camera) at the crop's resolution
    diagnostics: dict = field(default_factory=dict)


class FaceMeshRig(HeadModel):
    """An animatable head built from one face mesh (see module docstring)."""

    name = RIG_KIND
    version = RIG_VERSION
    licence = "built-in rig: MediaPipe face-mesh topology (Apache-2.0), no third-party assets"

    def __init__(
        self,
        template: Tensor,  # [V, 3]
        faces: Tensor,  # [F, 3]
        skin_weights: Tensor,  # [V, 5]
        joints: Tensor,  # [5, 3]
        blendshapes: Tensor,  # [E, V, 3] (E = len(EXPRESSION_NAMES); jaw_open's is a lip correction)
        face_labels: Tensor,  # [F] index into PART_NAMES
        landmark_embedding: LandmarkEmbedding,
        meta: dict | None = None,
    ) -> None:
        self.template = template.float()
        self.faces = faces.long()
        self.skin_weights = skin_weights.float()
        self.joints = joints.float()
        self.blendshapes = blendshapes.float()
        self.face_labels = face_labels.long()
        self.landmark_embedding = landmark_embedding
        self.meta = dict(meta or {})

    @property
    def num_vertices(self) -> int:
        return self.template.shape[0]

    @property
    def expression_dim(self) -> int:
        return len(EXPRESSION_NAMES)

    @property
    def expression_names(self) -> list[str]:
        return list(EXPRESSION_NAMES)

    def animate(self, expression: Tensor, pose: HeadPose, shape: Tensor | None = None) -> Tensor:
        if shape is not None and shape.numel() > 0:
            raise ValueError("the built-in rig has no shape space (its identity is the portrait's face mesh)")
        expression = expression.to(self.template)
        B = expression.shape[0]
        if len(pose) != B:
            raise ValueError(f"expression has {B} frames, pose {len(pose)}")
        verts = self.template[None] + torch.einsum("be,evk->bvk", expression, self.blendshapes)
        rotations = pose.joint_rotations().to(self.template).clone()  # [B, 5, 3]
        rotations[:, JAW, 0] = rotations[:, JAW, 0] + expression[:, 0] * JAW_OPEN_RAD
        rot_mats = axis_angle_to_matrix(rotations)
        _, transforms = rigid_chain(rot_mats, self.joints[None].expand(B, -1, -1), JOINT_PARENTS)
        verts = linear_blend_skinning(verts, transforms, self.skin_weights)
        return verts + pose.translation.to(verts)[:, None, :]

    def expression_preset(self, name: str, magnitude: float = 1.0) -> tuple[Tensor, Tensor]:
        e = torch.zeros(self.expression_dim)
        idx = {n: i for i, n in enumerate(EXPRESSION_NAMES)}
        combos = {
            "neutral": {},
            "jaw_open": {"jaw_open": 1.0},
            "smile": {"smile": 1.0, "jaw_open": 0.1},
            "frown": {"frown": 1.0, "brow_frown": 0.6},
            "pucker": {"lip_pucker": 1.0},
            "stretch": {"lip_stretch": 1.0},
            "blink": {"blink_left": 1.0, "blink_right": 1.0},
            "surprise": {"brow_raise": 1.0, "jaw_open": 0.7},
        }
        if name in idx:
            combos[name] = {name: 1.0}
        if name not in combos:
            raise KeyError(f"unknown expression preset {name!r}; known: {sorted(combos)}")
        for key, value in combos[name].items():
            e[idx[key]] = value * magnitude
        return e, torch.zeros(3)

    def part_of_faces(self, part: str) -> Tensor:
        return self.face_labels == PART_NAMES.index(part)

    # ---------------------------------------------------------------- persistence
    def save(self, path: Path) -> None:
        from safetensors.torch import save_file

        emb = self.landmark_embedding
        tensors = {
            "template": self.template.contiguous(),
            "faces": self.faces.contiguous(),
            "skin_weights": self.skin_weights.contiguous(),
            "joints": self.joints.contiguous(),
            "blendshapes": self.blendshapes.contiguous(),
            "face_labels": self.face_labels.contiguous(),
            "lmk_face_ids": emb.face_ids.long().contiguous(),
            "lmk_barycentric": emb.barycentric.float().contiguous(),
            "lmk_indices": emb.indices.long().contiguous(),
        }
        with atomic_dir(Path(path)) as tmp:
            save_file(tensors, str(tmp / "head.safetensors"))
            write_json_atomic(
                tmp / "head.json",
                {
                    "kind": RIG_KIND,
                    "version": RIG_VERSION,
                    "licence": self.licence,
                    "expression_names": list(EXPRESSION_NAMES),
                    "joint_names": list(JOINT_NAMES),
                    "part_names": list(PART_NAMES),
                    "meta": self.meta,
                },
            )

    @classmethod
    def load(cls, path: Path) -> "FaceMeshRig":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = Path(path)
        info = read_json(path / "head.json")
        if info.get("kind") != RIG_KIND:
            raise ValueError(f"{path} holds a {info.get('kind')!r} head, not the built-in rig")
        if info.get("version") != RIG_VERSION:
            raise ValueError(
                f"{path}: rig version {info.get('version')} is not supported (this code reads {RIG_VERSION}); re-run fit_head"
            )
        try:
            t = load_file(str(path / "head.safetensors"))
        except (SafetensorError, OSError) as exc:
            raise ValueError(f"{path / 'head.safetensors'} is not a readable safetensors file: {exc}") from exc
        emb = LandmarkEmbedding(t["lmk_face_ids"], t["lmk_barycentric"], t["lmk_indices"], MEDIAPIPE_468)
        return cls(
            t["template"], t["faces"], t["skin_weights"], t["joints"], t["blendshapes"], t["face_labels"], emb, info.get("meta")
        )


# ====================================================================== construction


def build_facemesh_rig(
    landmarks_px: np.ndarray,
    image_size: int,
    iris_px: np.ndarray | None = None,
    mask: np.ndarray | None = None,
    config: RigConfig | None = None,
) -> RigBuild:
    """Build the rig from one face mesh.

    landmarks_px: [468, 3] face-mesh output in the (square) reference image's pixels: x right,
        y down, z relative depth in the same scale (negative towards the camera).
    image_size: side of the reference image in pixels.
    iris_px: optional [10, 3] iris points (468..477 order: right centre + 4, left centre + 4).
    mask: optional [S, S] foreground in [0, 1]; sizes the skull/hair, neck and shoulders.
    Returns the rig, the reference camera (1 camera, ``image_size`` square) and diagnostics.
    """
    cfg = config or RigConfig()
    frame = lift_face(landmarks_px, image_size, cfg.face_width_m, cfg.fov_deg)
    face, W, camera = frame.face, frame.width, frame.camera
    face_jaw = face_jaw_weights(face, frame.triangles, W)  # [468]

    mesh = RigMesh()
    mesh.add(face, jaw_blend_weights(face_jaw))
    mesh.add_faces(frame.triangles, "face")
    skull, diag = add_skull(mesh, face, W, camera, face_jaw, mask, cfg.skull_rings, cfg.fit_skull_to_mask)
    eyes = add_eyeballs(mesh, frame, iris_px, cfg.eyeball_radius_m, cfg.iris_radius_m)
    mouth = add_mouth(mesh, face, frame.triangles, W, face_jaw, cfg.mouth_depth_m, camera.centers()[0].double().numpy())
    body = add_neck_and_torso(mesh, face, W, camera, mask, cfg.neck_segments)

    V, weights, labels = mesh.vertices(), mesh.weights(), np.array(mesh.labels)  # [V, 3], [V, 5], [F]
    faces = _orient_outwards(V, np.array(mesh.faces, dtype=np.int64), labels, skull.center, eyes, body.axis)
    if mask is not None:
        V, faces, weights, labels, diag["backdrop_pixels"] = add_backdrop(V, faces, weights, labels, camera, mask)
    blend = expression_blendshapes(len(V), face, W, eyes, mouth.lip_followers)  # [E, V, 3]

    diag["mouth_gap_m"] = mouth.lip_gap
    meta = {
        "config": asdict(cfg),
        "face_width_m": W,
        "camera_distance_m": frame.camera_distance,
        "skull_centre": skull.center.tolist(),
        "skull_radii": skull.radii.tolist(),
        "neck_half_width_m": body.neck_half_width,
        "shoulder_half_width_m": body.shoulder_half_width,
        **diag,
    }
    rig = FaceMeshRig(
        torch.from_numpy(V).float(),
        torch.from_numpy(faces),
        torch.from_numpy(weights).float(),
        torch.from_numpy(_joints(face, W, body.axis, eyes)).float(),
        torch.from_numpy(blend).float(),
        torch.from_numpy(labels).long(),
        _landmark_embedding(faces, len(V), len(face), eyes),
        meta,
    )
    return RigBuild(rig, camera, {**diag, "num_vertices": len(V), "num_faces": len(faces)})


def _joints(face: np.ndarray, W: float, axis: BodyAxis, eyes: dict[str, Eyeball]) -> np.ndarray:
    """[5, 3] joint locations in JOINT_NAMES order.

    The jaw hinges a little below and behind the face outline's ear points (where the real hinge
    is), the neck pivots inside the upper neck, the root sits low so head turns stay above it.
    """
    jaw = np.array([0.0, face[T.CHEEK_LEFT, 1] * 0.5 + face[T.CHEEK_RIGHT, 1] * 0.5 - 0.08 * W, -0.05 * W])
    neck = axis.point(0.2 * W, 0.0, 0.0)
    root = axis.point(-0.45 * W, 0.0, 0.0)
    return np.stack([root, neck, jaw, eyes["left"].centre, eyes["right"].centre])


def _orient_outwards(
    V: np.ndarray, faces: np.ndarray, labels: np.ndarray, skull_centre: np.ndarray, eyes: dict[str, Eyeball], axis: BodyAxis
) -> np.ndarray:
    """Wind every added triangle so its normal points out of the head (the face is already +z)."""
    tri = V[faces]
    centroid = tri.mean(1)
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    out_dir = np.zeros_like(centroid)
    part = np.array(PART_NAMES)[labels]
    out_dir[part == "skull"] = centroid[part == "skull"] - skull_centre
    for name in ("neck", "torso"):
        sel = part == name
        rel = centroid[sel] - axis.origin
        out_dir[sel] = rel - (rel @ axis.up)[:, None] * axis.up
    eye_centres = [eye.centre for eye in eyes.values()]
    for i in np.nonzero(part == "eyeball")[0]:
        c = min(eye_centres, key=lambda e: np.linalg.norm(centroid[i] - e))
        out_dir[i] = centroid[i] - c
    # keep: the face is +z already; the mouth interior is wound by construction (the cavity
    # consistently with the face, teeth and tongue outwards by their signed volumes)
    keep = np.isin(part, ("face", "mouth", "teeth_upper", "teeth_lower", "tongue"))
    out_dir[keep] = normal[keep]
    flip = (normal * out_dir).sum(-1) < 0
    faces = faces.copy()
    faces[flip] = faces[flip][:, [0, 2, 1]]
    return faces


def _landmark_embedding(faces: np.ndarray, num_vertices: int, n_face: int, eyes: dict[str, Eyeball]) -> LandmarkEmbedding:
    """Every face-mesh landmark is a vertex (the first ``n_face``); iris points sit on the eyeballs.

    Each landmark is embedded as a corner of the first triangle that uses its vertex: face
    vertices are used first by face triangles and iris vertices by eyeball triangles, so no
    landmark rides on the mouth interior or the backdrop.
    """
    vert_to_face = np.full(num_vertices, -1)
    vert_slot = np.zeros(num_vertices, dtype=np.int64)
    for fi, tri in enumerate(faces):
        for slot, v in enumerate(tri):
            if vert_to_face[v] < 0:
                vert_to_face[v] = fi
                vert_slot[v] = slot
    lmk_vertices = list(range(n_face))
    lmk_indices = list(range(n_face))
    for side, base in (("right", T.IRIS_CENTER_RIGHT), ("left", T.IRIS_CENTER_LEFT)):
        ring = eyes[side].ring
        lmk_vertices += [eyes[side].apex, ring[0], ring[2], ring[4], ring[6]]
        lmk_indices += list(range(base, base + 5))
    face_ids = torch.tensor(vert_to_face[lmk_vertices], dtype=torch.long)
    bary = torch.zeros(len(lmk_vertices), 3)
    bary[torch.arange(len(lmk_vertices)), torch.from_numpy(vert_slot[lmk_vertices])] = 1.0
    return LandmarkEmbedding(face_ids, bary, torch.tensor(lmk_indices, dtype=torch.long), MEDIAPIPE_468)

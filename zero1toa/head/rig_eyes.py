"""The eyeballs of the built-in rig: a spherical cap filling each eye opening.

Each cap is an iris ring of 8 vertices on a sphere of ``eyeball_radius_m`` plus a centre
(apex) vertex, fanned to the eye's 16-vertex rim. The cap is skinned wholly to its eye joint
at the sphere's centre, so eye rotations turn the iris without moving the lids; the rim stays
on the face. The iris landmarks (468-477) are embedded on the apex and ring vertices.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import topology as T
from .rig_face import FaceFrame
from .rig_mesh import EYE_L, EYE_R, RigMesh, joint_weights, normalize


@dataclass
class Eyeball:
    centre: np.ndarray  # [3] the eye joint: the sphere's centre
    ring: list[int]  # 8 iris-ring vertices, counter-clockwise from the subject's left (+x)
    apex: int  # the iris centre vertex
    loop: list[int]  # the eye opening's rim (face-mesh vertices)


def add_eyeballs(
    mesh: RigMesh,
    frame: FaceFrame,
    iris_px: np.ndarray | None,
    eyeball_radius: float,
    iris_radius: float,
) -> dict[str, Eyeball]:
    """Add both caps (left first); iris_px: optional [10, 3] iris points centre the irises."""
    topo = T.facemesh_topology()
    face = frame.face
    eyes = {}
    for side, loop_name, iris_slot, joint in (("left", "left_eye", 5, EYE_L), ("right", "right_eye", 0, EYE_R)):
        loop = list(topo.loops[loop_name])
        rim = face[loop]
        if iris_px is not None:
            centre_xy = frame.lift(np.asarray(iris_px, dtype=np.float64)[iris_slot : iris_slot + 1])[0, :2]
        else:
            centre_xy = rim[:, :2].mean(0)
        front_z = rim[:, 2].max()
        apex = np.array([centre_xy[0], centre_xy[1], front_z - 0.0005])
        eye_centre = apex - np.array([0.0, 0.0, eyeball_radius])
        ang = np.linspace(0, 2 * math.pi, 8, endpoint=False)
        ring_pts = apex + iris_radius * np.stack([np.cos(ang), np.sin(ang), np.zeros_like(ang)], -1)
        ring_pts = eye_centre + normalize(ring_pts - eye_centre) * eyeball_radius  # onto the sphere
        ring_idx = mesh.add(ring_pts, joint_weights(joint))
        centre_idx = mesh.add(apex[None], joint_weights(joint))[0]
        # Join the 16-vertex rim to the 8-vertex ring: each rim edge fans to its nearest ring vertex.
        rim_ang = np.arctan2(rim[:, 1] - centre_xy[1], rim[:, 0] - centre_xy[0])
        nearest = [int(np.argmin(np.abs(np.angle(np.exp(1j * (ang - a)))))) for a in rim_ang]
        tris = []
        for i in range(len(loop)):
            j = (i + 1) % len(loop)
            tris.append([loop[i], ring_idx[nearest[i]], loop[j]])
            if nearest[i] != nearest[j]:
                tris.append([loop[j], ring_idx[nearest[i]], ring_idx[nearest[j]]])
        tris += [[ring_idx[i], centre_idx, ring_idx[(i + 1) % 8]] for i in range(8)]
        mesh.add_faces(tris, "eyeball")
        eyes[side] = Eyeball(eye_centre, ring_idx, centre_idx, loop)
    return eyes

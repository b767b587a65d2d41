"""Rotations and linear blend skinning shared by every head model.

FLAME and the built-in rig animate the same way: a shaped, expressed rest mesh, joint
locations regressed (or stored) in the rest pose, pose-dependent correctives where the model
has them, then LBS along a kinematic chain. Keeping one implementation means the two heads
cannot drift apart in conventions (axis-angle, parent order, where translation is applied).
"""

from __future__ import annotations

import torch
from torch import Tensor


def axis_angle_to_matrix(axis_angle: Tensor) -> Tensor:
    """Rodrigues: [..., 3] axis-angle -> [..., 3, 3] rotation (differentiable at zero)."""
    angle = axis_angle.norm(dim=-1, keepdim=True)  # [..., 1]
    safe = angle.clamp_min(1e-8)
    axis = axis_angle / safe
    x, y, z = axis.unbind(-1)
    zeros = torch.zeros_like(x)
    K = torch.stack([zeros, -z, y, z, zeros, -x, -y, x, zeros], -1).reshape(*axis.shape[:-1], 3, 3)
    s = torch.sin(angle)[..., None]
    c = torch.cos(angle)[..., None]
    eye = torch.eye(3, dtype=axis_angle.dtype, device=axis_angle.device).expand_as(K)
    R = eye + s * K + (1 - c) * (K @ K)
    # Below 1e-8 rad the formula loses precision: use the first-order expansion instead.
    small = (angle < 1e-8)[..., None]
    ax, ay, az = axis_angle.unbind(-1)
    K_raw = torch.stack([zeros, -az, ay, az, zeros, -ax, -ay, ax, zeros], -1).reshape_as(K)
    return torch.where(small, eye + K_raw, R)


def matrix_to_axis_angle(R: Tensor) -> Tensor:
    """[..., 3, 3] rotation -> [..., 3] axis-angle (angle in [0, pi])."""
    cos = ((R.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2).clamp(-1 + 1e-7, 1 - 1e-7)
    angle = torch.acos(cos)
    axis = torch.stack([R[..., 2, 1] - R[..., 1, 2], R[..., 0, 2] - R[..., 2, 0], R[..., 1, 0] - R[..., 0, 1]], -1)
    axis = axis / (2 * torch.sin(angle)[..., None]).clamp_min(1e-8)
    return axis * angle[..., None]


def rigid_chain(rot_mats: Tensor, joints: Tensor, parents: list[int]) -> tuple[Tensor, Tensor]:
    """Forward kinematics.

    rot_mats: [B, J, 3, 3] local rotations; joints: [B, J, 3] rest-pose joint locations;
    parents: parent index per joint (-1 for the root, parents before children).
    Returns (posed joints [B, J, 3], relative transforms [B, J, 4, 4]) where the relative
    transform maps a rest-pose point skinned to that joint to its posed location.
    """
    B, J = joints.shape[:2]
    rel = joints.clone()
    for j, p in enumerate(parents):
        if p >= 0:
            rel[:, j] = joints[:, j] - joints[:, p]
    local = torch.zeros(B, J, 4, 4, dtype=joints.dtype, device=joints.device)
    local[..., :3, :3] = rot_mats
    local[..., :3, 3] = rel
    local[..., 3, 3] = 1
    world = []
    for j, p in enumerate(parents):
        world.append(local[:, j] if p < 0 else world[p] @ local[:, j])
    world_t = torch.stack(world, 1)  # [B, J, 4, 4]
    posed_joints = world_t[..., :3, 3]
    # Remove the rest-pose joint location so the transform applies to rest-pose points.
    correction = (world_t[..., :3, :3] @ joints[..., None])[..., 0]
    relative = world_t.clone()
    relative[..., :3, 3] = world_t[..., :3, 3] - correction
    return posed_joints, relative


def linear_blend_skinning(vertices: Tensor, transforms: Tensor, weights: Tensor) -> Tensor:
    """vertices: [B, V, 3] rest pose; transforms: [B, J, 4, 4]; weights: [V, J] -> [B, V, 3]."""
    T = torch.einsum("vj,bjkl->bvkl", weights, transforms)  # [B, V, 4, 4]
    return (T[..., :3, :3] @ vertices[..., None])[..., 0] + T[..., :3, 3]

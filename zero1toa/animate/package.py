"""The animated avatar package: one glTF 2.0 binary (.glb) a web page or an engine can pose.

Why: a .ply is one frozen frame. The package carries what *animates* the avatar - the head's
rest mesh, expression blendshapes, joints, skinning weights, pose correctives and the Gaussians
in their triangles' local frames - so a reader reproduces :meth:`BoundGaussians.posed` for any
expression and pose (``zero1toa view`` does it in WebGL, :func:`pose_package` in numpy).

Container: a standard GLB (``glTF`` magic, version 2, one JSON chunk, one BIN chunk). A glTF
loader sees one mesh: the rest vertices (``POSITION``, float32), the triangles (uint32) and one
morph target per expression coefficient (``mesh.extras.targetNames``), skinned to the joint nodes
(inverse bind matrices, every weight in ``JOINTS_k``/``WEIGHTS_k`` sets of 4). Everything else lives in
the extension ``ZERO1TOA_gaussian_avatar`` (listed in ``extensionsUsed``, not required): a
``arrays`` table ``name -> {bufferView, dtype, shape}`` (little-endian; dtype one of float32,
float16, uint32, int32) plus the metadata below, including the ``arkit`` block with which the page
plays a dropped ARKit capture (:func:`zero1toa.animate.arkit.viewer_mapping`). The layout and the posing equations are in the
README ("The animated package"); :data:`PACKAGE_FORMAT` names this version.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

PACKAGE_FORMAT = "zero1toa-avatar-package/1"
EXTENSION = "ZERO1TOA_gaussian_avatar"
_GLB_MAGIC = 0x46546C67  # "glTF"
_CHUNK_JSON = 0x4E4F534A
_CHUNK_BIN = 0x004E4942
_DTYPES = {"float32": np.float32, "float16": np.float16, "uint32": np.uint32, "int32": np.int32, "uint16": np.uint16}
_GLTF_COMPONENT = {np.dtype(np.float32): 5126, np.dtype(np.uint32): 5125, np.dtype(np.uint16): 5123}

#: Named expressions stored for the page's buttons (each head maps them to its own space).
EXPRESSION_PRESETS = ("neutral", "jaw_open", "smile", "frown", "pucker", "stretch", "blink", "surprise")
#: Drive presets stored as frame sequences (``turntable`` moves the camera: its yaws are stored).
DRIVE_FRAMES = 48


# ----------------------------------------------------------------------------- rig extraction
@dataclass
class RigArrays:
    """A head model as plain arrays: the posing equations of the README, nothing model-specific."""

    template: np.ndarray  # [V, 3] rest vertices (identity applied)
    faces: np.ndarray  # [F, 3]
    expr_dirs: np.ndarray  # [E, V, 3]
    joints: np.ndarray  # [J, 3] rest joint locations
    joint_expr_dirs: np.ndarray | None  # [E, J, 3] joint motion per expression unit (FLAME), or None
    parents: list[int]  # [J]
    skin_weights: np.ndarray  # [V, J]
    pose_dirs: np.ndarray | None  # [P = 9 (J-1), V, 3] correctives on (R_j - I) of joints 1.., or None
    expression_jaw: np.ndarray  # [E, 3] jaw axis-angle added per expression unit


def rig_arrays(head) -> RigArrays:
    """The built-in rig or FLAME as :class:`RigArrays` (raises for a head it cannot express)."""
    from ..head.base import JOINT_PARENTS

    name = getattr(head, "name", "")
    if hasattr(head, "blendshapes") and hasattr(head, "skin_weights"):  # the built-in rig
        from ..head.rig_expressions import JAW_OPEN_RAD

        E = head.expression_dim
        jaw = np.zeros((E, 3), np.float32)
        jaw[0, 0] = JAW_OPEN_RAD  # FaceMeshRig.animate: the jaw opens with jaw_open (coefficient 0)
        return RigArrays(
            head.template.numpy().astype(np.float32), head.faces.numpy().astype(np.int64),
            head.blendshapes.numpy().astype(np.float32), head.joints.numpy().astype(np.float32), None,
            list(JOINT_PARENTS), head.skin_weights.numpy().astype(np.float32), None, jaw,
        )  # fmt: skip
    if hasattr(head, "exprdirs") and hasattr(head, "posedirs"):  # FLAME
        shape = head.shape.double()
        template = head.v_template.double() + (head.shapedirs.double() @ shape)
        joints = head._j_template.double() + (head._j_shapedirs.double() @ shape)
        return RigArrays(
            template.float().numpy(), head.faces.numpy().astype(np.int64),
            head.exprdirs.permute(2, 0, 1).contiguous().numpy().astype(np.float32),
            joints.float().numpy(), head._j_exprdirs.permute(2, 0, 1).contiguous().numpy().astype(np.float32),
            list(head.parents), head.lbs_weights.numpy().astype(np.float32),
            head.posedirs.permute(2, 0, 1).contiguous().numpy().astype(np.float32),
            np.zeros((head.expression_dim, 3), np.float32),
        )  # fmt: skip
    raise ValueError(f"the animated package supports the built-in rig and FLAME, not a {name!r} head")


# ----------------------------------------------------------------------------- building
def _presets(head) -> tuple[list[dict], list[dict]]:
    """(named expressions, drive sequences) as JSON-able rows for the page's controls."""
    from .drive import PRESETS, preset_sequence

    named = []
    for name in EXPRESSION_PRESETS:
        try:
            e, jaw = head.expression_preset(name, 1.0)
        except (KeyError, ValueError, NotImplementedError):  # a preset this head does not have
            continue
        named.append({"name": name, "expression": [round(float(x), 6) for x in e], "jaw": [float(x) for x in jaw]})
    drives = []
    for name in PRESETS:
        seq = preset_sequence(name, head, DRIVE_FRAMES)
        drives.append({"name": name, "fps": 24.0, "frames": len(seq)})
    return named, drives


def _drive_arrays(head) -> dict[str, np.ndarray]:
    from .drive import PRESETS, preset_sequence

    out = {}
    for name in PRESETS:
        seq = preset_sequence(name, head, DRIVE_FRAMES)
        out[f"drive_{name}_expression"] = seq.expressions.numpy().astype(np.float32)  # [T, E]
        out[f"drive_{name}_pose"] = seq.pose.as_vector().numpy().astype(np.float32)  # [T, 18]
        out[f"drive_{name}_yaw_deg"] = np.asarray(seq.yaws_deg, np.float32)  # [T]
    return out


def build_package(
    gaussians,
    head,
    camera=None,  # Cameras (1 camera): the page's starting view; None: a frontal camera
    csv_mappings: list[dict] | None = None,
    background: float = 1.0,
    info: dict | None = None,
    arkit_angles: str = "halfturns",
) -> bytes:
    """The avatar's animated package as GLB bytes (see the module docstring and the README).

    ``arkit_angles``: the rotation units the page assumes for a dropped ARKit capture (the
    default of ``zero1toa animate --arkit-angles``; the page's URL option ``arkit_angles=`` overrides it).
    """
    from ..progressive.schedules import orbit_target
    from .animate import frontal_camera

    rig = rig_arrays(head)
    p = {k: v.detach().cpu() for k, v in gaussians.params.items()}
    V, F = rig.template.shape[0], rig.faces.shape[0]
    E, J = rig.expr_dirs.shape[0], rig.joints.shape[0]
    N = int(p["means"].shape[0])
    if int(p["binding"].max()) >= F:
        raise ValueError(f"Gaussians bind to triangle {int(p['binding'].max())}, the head has {F}")
    colors = np.concatenate([p["sh0"].numpy(), p["shN"].numpy()], 1).astype(np.float32)  # [N, K, 3]
    arrays: dict[str, np.ndarray] = {
        "template": rig.template.astype(np.float32),
        "faces": rig.faces.astype(np.uint32),
        "expr_dirs": rig.expr_dirs.astype(np.float32),
        "joints": rig.joints.astype(np.float32),
        "parents": np.asarray(rig.parents, np.int32),
        "skin_weights": rig.skin_weights.astype(np.float32),
        "expression_jaw": rig.expression_jaw.astype(np.float32),
        # Gaussians in their triangle's frame (units: the triangle's size k = sqrt(2 area))
        "gaussian_face": p["binding"].numpy().astype(np.uint32),
        "gaussian_offset": p["means"].numpy().astype(np.float32),  # float32: positions carry the face's detail
        "gaussian_log_scale": p["scales"].numpy().astype(np.float16),
        "gaussian_rotation": p["quats"].numpy().astype(np.float16),  # wxyz, not normalised
        "gaussian_opacity_logit": p["opacities"].numpy().astype(np.float16),
        "gaussian_sh": colors.astype(np.float16),
    }
    arrays.update(_gltf_skin_arrays(rig))
    if rig.joint_expr_dirs is not None:
        arrays["joint_expr_dirs"] = rig.joint_expr_dirs.astype(np.float32)
    if rig.pose_dirs is not None:
        arrays["pose_dirs"] = rig.pose_dirs.astype(np.float16)
    arrays.update(_drive_arrays(head))
    from .arkit import viewer_mapping

    arkit_meta, arkit_arrays = viewer_mapping(head, arkit_angles)
    arrays.update(arkit_arrays)

    if camera is None:
        camera = frontal_camera(head)
    named, drives = _presets(head)
    names = head.expression_names or [f"expr_{i}" for i in range(E)]
    ranges = [[-0.5, 1.5]] * E if head.expression_names else [[-3.0, 3.0]] * E
    meta = {
        "format": PACKAGE_FORMAT,
        "head": {"kind": head.name, "version": head.version, "licence": head.licence},
        "counts": {"vertices": V, "faces": F, "expressions": E, "joints": J, "gaussians": N},
        "sh_degree": int(gaussians.sh_degree),
        "expression_names": list(names),
        "expression_ranges": ranges,
        "joint_names": ["root", "neck", "jaw", "eye_left", "eye_right"][:J],
        "pose_layout": "rotation(3) neck(3) jaw(3) eye_left(3) eye_right(3) translation(3); axis-angle radians, metres",
        "expression_presets": named,
        "drive_presets": drives,
        "csv_mappings": list(csv_mappings or []),
        "arkit": arkit_meta,
        "camera": {
            "viewmat": camera.viewmats[0].tolist(),
            "K": camera.Ks[0].tolist(),
            "width": int(camera.width),
            "height": int(camera.height),
            "target": [float(x) for x in orbit_target(head)],
        },
        "render": {"background": float(background), "eps2d": 0.3, "alpha_min": 1 / 255, "alpha_max": 0.999, "near": 0.01},
        "info": dict(info or {}),
    }
    return _write_glb(arrays, meta, E)


def _gltf_skin_arrays(rig: RigArrays) -> dict[str, np.ndarray]:
    """The skin as glTF wants it: 4 influences per attribute set (JOINTS_k / WEIGHTS_k), every
    joint kept (sets of 4, so 5 joints need two sets and nothing is dropped), and inverse bind
    matrices that undo the rest joint locations (rest rotations are the identity)."""
    V, J = rig.skin_weights.shape
    out = {}
    for k in range(-(-J // 4)):
        ids = np.arange(4 * k, 4 * k + 4)
        w = np.zeros((V, 4), np.float32)
        live = ids < J
        w[:, live] = rig.skin_weights[:, ids[live]]
        out[f"gltf_joints_{k}"] = np.broadcast_to(np.where(live, ids, 0).astype(np.uint16), (V, 4)).copy()
        out[f"gltf_weights_{k}"] = w
    ibm = np.tile(np.eye(4, dtype=np.float32), (J, 1, 1))
    ibm[:, :3, 3] = -rig.joints
    out["gltf_inverse_bind"] = np.ascontiguousarray(ibm.transpose(0, 2, 1))  # column-major, as glTF stores MAT4
    return out


def _write_glb(arrays: dict[str, np.ndarray], meta: dict, num_targets: int) -> bytes:
    """Pack ``arrays`` into one BIN chunk (4-byte aligned views) + the glTF JSON describing them."""
    blob = bytearray()
    views, table = [], {}
    for name, arr in arrays.items():
        arr = np.ascontiguousarray(arr)
        dtype = arr.dtype.newbyteorder("<")
        data = arr.astype(dtype, copy=False).tobytes()
        while len(blob) % 4:
            blob.append(0)
        views.append({"buffer": 0, "byteOffset": len(blob), "byteLength": len(data), "name": name})
        table[name] = {"bufferView": len(views) - 1, "dtype": arr.dtype.name, "shape": list(arr.shape)}
        blob.extend(data)
    while len(blob) % 4:
        blob.append(0)

    accessors = []

    def accessor(name: str, kind: str, count: int, byte_offset: int = 0, minmax: np.ndarray | None = None) -> int:
        arr = arrays[name]
        acc = {"bufferView": table[name]["bufferView"], "byteOffset": byte_offset, "componentType": _GLTF_COMPONENT[arr.dtype], "count": count, "type": kind}
        if minmax is not None:
            acc["min"] = [float(x) for x in minmax.min(0)]
            acc["max"] = [float(x) for x in minmax.max(0)]
        accessors.append(acc)
        return len(accessors) - 1

    V = arrays["template"].shape[0]
    pos = accessor("template", "VEC3", V, 0, arrays["template"])
    idx = accessor("faces", "SCALAR", arrays["faces"].size)
    targets = [{"POSITION": accessor("expr_dirs", "VEC3", V, e * V * 12, arrays["expr_dirs"][e])} for e in range(num_targets)]
    attributes = {"POSITION": pos}
    sets = sum(1 for name in arrays if name.startswith("gltf_joints_"))
    for k in range(sets):
        attributes[f"JOINTS_{k}"] = accessor(f"gltf_joints_{k}", "VEC4", V)
        attributes[f"WEIGHTS_{k}"] = accessor(f"gltf_weights_{k}", "VEC4", V)
    joints, parents = arrays["joints"], [int(x) for x in arrays["parents"]]
    J = len(parents)
    names = meta["joint_names"] + [f"joint_{j}" for j in range(len(meta["joint_names"]), J)]
    joint_nodes = []
    for j, par in enumerate(parents):  # nodes 1..J: the skeleton at rest (translations only)
        node = {"name": names[j], "translation": [float(x) for x in (joints[j] - (joints[par] if par >= 0 else 0))]}
        children = [1 + c for c, pc in enumerate(parents) if pc == j]
        if children:
            node["children"] = children
        joint_nodes.append(node)
    roots = [1 + j for j, par in enumerate(parents) if par < 0]
    ibm = accessor("gltf_inverse_bind", "MAT4", J)
    gltf: dict[str, Any] = {
        "asset": {"version": "2.0", "generator": "zero1toa"},
        "extensionsUsed": [EXTENSION],
        "scene": 0,
        "scenes": [{"nodes": [0, *roots]}],
        "nodes": [{"name": "head", "mesh": 0, "skin": 0}, *joint_nodes],
        "skins": [{"inverseBindMatrices": ibm, "joints": list(range(1, J + 1)), "skeleton": roots[0]}],
        "meshes": [
            {
                "name": "head",
                "primitives": [{"attributes": attributes, "indices": idx, "mode": 4, "targets": targets}],
                "weights": [0.0] * num_targets,
                "extras": {"targetNames": meta["expression_names"]},
            }
        ],
        "accessors": accessors,
        "bufferViews": views,
        "buffers": [{"byteLength": len(blob)}],
        "extensions": {EXTENSION: {**meta, "arrays": table}},
    }
    js = json.dumps(gltf, separators=(",", ":")).encode("utf-8")
    js += b" " * (-len(js) % 4)
    total = 12 + 8 + len(js) + 8 + len(blob)
    return b"".join(
        [struct.pack("<III", _GLB_MAGIC, 2, total), struct.pack("<II", len(js), _CHUNK_JSON), js, struct.pack("<II", len(blob), _CHUNK_BIN), bytes(blob)]
    )


# ----------------------------------------------------------------------------- reading
@dataclass
class AvatarPackage:
    meta: dict  # the extension's JSON (format, counts, presets, camera, ...)
    arrays: dict[str, np.ndarray]


def read_package(source: Path | bytes) -> AvatarPackage:
    """Parse a package (a .glb path or its bytes); raises ValueError naming what is wrong."""
    data = Path(source).read_bytes() if isinstance(source, (str, Path)) else bytes(source)
    if len(data) < 20:
        raise ValueError("not a zero1toa package: too short to be a .glb")
    magic, version, total = struct.unpack_from("<III", data, 0)
    if magic != _GLB_MAGIC or version != 2:
        raise ValueError("not a zero1toa package: no glTF 2.0 binary header")
    if total != len(data):
        raise ValueError(f"truncated package: header says {total} bytes, file has {len(data)}")
    jlen, jtype = struct.unpack_from("<II", data, 12)
    if jtype != _CHUNK_JSON:
        raise ValueError("malformed .glb: the first chunk is not JSON")
    gltf = json.loads(data[20 : 20 + jlen].decode("utf-8"))
    off = 20 + jlen
    blen, btype = struct.unpack_from("<II", data, off)
    if btype != _CHUNK_BIN:
        raise ValueError("malformed .glb: no BIN chunk")
    blob = memoryview(data)[off + 8 : off + 8 + blen]
    ext = gltf.get("extensions", {}).get(EXTENSION)
    if not ext or ext.get("format") != PACKAGE_FORMAT:
        raise ValueError(f"this .glb has no {EXTENSION} block of format {PACKAGE_FORMAT!r}")
    arrays = {}
    for name, spec in ext["arrays"].items():
        view = gltf["bufferViews"][spec["bufferView"]]
        dtype = np.dtype(_DTYPES[spec["dtype"]]).newbyteorder("<")
        arr = np.frombuffer(blob[view["byteOffset"] : view["byteOffset"] + view["byteLength"]], dtype=dtype)
        arrays[name] = arr.reshape(spec["shape"])
    meta = {k: v for k, v in ext.items() if k != "arrays"}
    return AvatarPackage(meta, arrays)


# ----------------------------------------------------------------------------- reference posing
def _rodrigues(aa: np.ndarray) -> np.ndarray:
    """[..., 3] axis-angle -> [..., 3, 3] (float64)."""
    aa = np.asarray(aa, np.float64)
    angle = np.linalg.norm(aa, axis=-1, keepdims=True)
    axis = aa / np.maximum(angle, 1e-8)
    x, y, z = np.moveaxis(axis, -1, 0)
    zero = np.zeros_like(x)
    K = np.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(*aa.shape[:-1], 3, 3)
    s, c = np.sin(angle)[..., None], np.cos(angle)[..., None]
    return np.eye(3) + s * K + (1 - c) * (K @ K)


def pose_vertices(pkg: AvatarPackage, expression: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """Vertices [V, 3] for expression [E] and an 18-value pose (the README's equations, float64)."""
    a = pkg.arrays
    e = np.asarray(expression, np.float64)
    pose = np.asarray(pose, np.float64)
    v = a["template"].astype(np.float64) + np.einsum("e,evk->vk", e, a["expr_dirs"].astype(np.float64))
    joints = a["joints"].astype(np.float64)
    if "joint_expr_dirs" in a:
        joints = joints + np.einsum("e,ejk->jk", e, a["joint_expr_dirs"].astype(np.float64))
    aa = np.stack([pose[0:3], pose[3:6], pose[6:9] + e @ a["expression_jaw"].astype(np.float64), pose[9:12], pose[12:15]])
    J = joints.shape[0]
    R = _rodrigues(aa[:J])  # [J, 3, 3]
    if "pose_dirs" in a:
        feat = (R[1:] - np.eye(3)).reshape(-1)  # [9 (J-1)]
        v = v + np.einsum("p,pvk->vk", feat, a["pose_dirs"].astype(np.float64))
    parents = [int(x) for x in a["parents"]]
    world = []
    for j, par in enumerate(parents):
        local = np.eye(4)
        local[:3, :3] = R[j]
        local[:3, 3] = joints[j] - (joints[par] if par >= 0 else 0)
        world.append(local if par < 0 else world[par] @ local)
    T = np.stack(world)  # [J, 4, 4]
    T[:, :3, 3] -= np.einsum("jab,jb->ja", T[:, :3, :3], joints)
    Tv = np.einsum("vj,jab->vab", a["skin_weights"].astype(np.float64), T)  # [V, 4, 4]
    return np.einsum("vab,vb->va", Tv[:, :3, :3], v) + Tv[:, :3, 3] + pose[15:18]


def pose_package(pkg: AvatarPackage, expression: np.ndarray, pose: np.ndarray) -> dict[str, np.ndarray]:
    """World Gaussians of one frame: means [N, 3], rotations [N, 3, 3], scales [N, 3] (linear),
    opacities [N] (sigmoid), sh [N, K, 3] - what a renderer of the package draws."""
    a = pkg.arrays
    verts = pose_vertices(pkg, expression, pose)
    tri = verts[a["faces"].astype(np.int64)]  # [F, 3, 3]
    e0 = tri[:, 1] - tri[:, 0]
    cross = np.cross(e0, tri[:, 2] - tri[:, 0])
    dbl = np.linalg.norm(cross, axis=-1)
    n = cross / np.maximum(dbl, 1e-12)[:, None]
    x = e0 / np.maximum(np.linalg.norm(e0, axis=-1), 1e-12)[:, None]
    R_tri = np.stack([x, np.cross(n, x), n], -1)  # [F, 3, 3] columns
    k = np.sqrt(np.maximum(dbl, 1e-12))
    b = a["gaussian_face"].astype(np.int64)
    centroid = tri.mean(1)
    means = centroid[b] + np.einsum("nab,nb->na", R_tri[b], a["gaussian_offset"].astype(np.float64) * k[b, None])
    q = a["gaussian_rotation"].astype(np.float64)
    q = q / np.maximum(np.linalg.norm(q, axis=-1, keepdims=True), 1e-12)
    w, qx, qy, qz = q.T
    R_loc = np.stack(
        [1 - 2 * (qy * qy + qz * qz), 2 * (qx * qy - w * qz), 2 * (qx * qz + w * qy),
         2 * (qx * qy + w * qz), 1 - 2 * (qx * qx + qz * qz), 2 * (qy * qz - w * qx),
         2 * (qx * qz - w * qy), 2 * (qy * qz + w * qx), 1 - 2 * (qx * qx + qy * qy)], -1,
    ).reshape(-1, 3, 3)  # fmt: skip
    return {
        "means": means,
        "rotations": R_tri[b] @ R_loc,
        "scales": np.exp(a["gaussian_log_scale"].astype(np.float64)) * k[b, None],
        "opacities": 1 / (1 + np.exp(-a["gaussian_opacity_logit"].astype(np.float64))),
        "sh": a["gaussian_sh"].astype(np.float64),
    }


# ----------------------------------------------------------------------------- from a checkpoint
def write_package(checkpoint: Path, out: Path) -> dict:
    """``zero1toa export --format package``: CHECKPOINT (avatar/round/run folder) -> a .glb."""
    import time

    from ..avatar.checkpoint import load_avatar
    from ..utils.io import write_bytes_atomic
    from .animate import reference_view, resolve_checkpoint

    t0 = time.perf_counter()
    resolved = resolve_checkpoint(Path(checkpoint))
    gaussians, head, info = load_avatar(resolved.avatar_dir)
    camera, camera_source = reference_view(resolved, head, info)
    data = build_package(gaussians, head, camera, info={"avatar": str(resolved.avatar_dir), "camera_source": camera_source})
    out = Path(out)
    write_bytes_atomic(out, data)
    return {
        "package": str(out),
        "format": PACKAGE_FORMAT,
        "bytes": len(data),
        "avatar": str(resolved.avatar_dir),
        "num_gaussians": gaussians.num_gaussians,
        "sh_degree": gaussians.sh_degree,
        "licence": head.licence,
        "seconds": round(time.perf_counter() - t0, 3),
    }

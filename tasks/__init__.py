"""Orchestration-facing wrappers of the method's DAG nodes.

- :mod:`tasks.keys`: cache keys, artifacts and their validity (no orchestrator imports);
- :mod:`tasks.execute`: the task code every orchestrator runs for a node (``run_node``);
- :mod:`tasks.tracking`: the MLflow records of a node (client API, explicit parent run);
- :mod:`tasks.nodes`: the Prefect tasks, one per DAG node (imports Prefect).
"""

"""zero1toa: one portrait photo to an animatable 3D Gaussian head avatar (Zero-1-to-A).

The method as a plain library: no orchestrator imports here (Prefect, DVC, MLflow and Hydra live
in ``tasks/`` and ``flows/``), so a notebook can build an avatar with nothing but torch.
"""

__version__ = "0.1.0"

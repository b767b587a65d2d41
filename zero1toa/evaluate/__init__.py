"""Evaluation: the paper's metrics, plus the videos, contact sheets and plots people look at.

- :mod:`.run`: ``evaluate_run(run_dir, avatar_folder, cfg, seed)``, the DAG's evaluate node
- :mod:`.metrics`: PSNR/SSIM (masked), landmark error, detection rate, temporal stability
- :mod:`.clip_score`: CLIP text-image score (Table 1) and image-image identity similarity
- :mod:`.fps`: render-only and animate+render FPS with their conditions
- :mod:`.visuals`: turntable/expression videos, contact sheet, training plots
- :mod:`.report`: one self-contained HTML page comparing runs

Submodules are imported on use (kornia, transformers and matplotlib load only when needed).
"""

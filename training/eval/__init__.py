"""Evaluation: the metrics (``image``: PSNR, SSIM, LPIPS, CLIP; ``fid``; ``geometry``: CD, F1@t), the
ground-truth meshes (``gt_mesh``), the generate and measure jobs (``generate``, ``measure``) and the HTML
report (``report``).

See docs/evaluation.md for the definitions and REFERENCE section 5 for the papers'.
"""
from training.eval.image import MetricUnavailable, ImageMetrics, on_white, psnr, ssim  # noqa: F401
from training.eval.geometry import GEOM_METRICS, F1_THRESHOLDS, geometry_scores, mesh_distances, average_over_characters  # noqa: F401

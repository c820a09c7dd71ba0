"""Evaluation metrics: image (PSNR, SSIM, LPIPS, CLIP), FID, geometry (CD, F1@t).

See docs/evaluation.md for the definitions and REFERENCE section 5 for the papers'.
"""
from .image import MetricUnavailable, ImageMetrics, on_white, psnr, ssim  # noqa: F401
from .geometry import GEOM_METRICS, F1_THRESHOLDS, geometry_scores, mesh_distances, average_over_characters  # noqa: F401

"""FID (NOVA-3D reports it) over all generated vs ground-truth views.

Uses pytorch-fid's TensorFlow-ported Inception (pool3, 2048-d) so values are
comparable with the usual FID numbers.  The weights file comes from
``--weights DIR`` or the torch hub cache; missing -> ``MetricUnavailable``.
Below ``FID_MIN_IMAGES`` images per side FID is reported unavailable: the
2048x2048 covariance is then far from full rank and the value is mostly bias.
"""
from __future__ import annotations

from unittest import mock

import numpy as np
import torch

from training.eval.image import MetricUnavailable, _hub_checkpoints, _to_tensor, find_weights, resolve_device

FID_FILE = "pt_inception-2015-12-05-6726825d.pth"
FID_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{FID_FILE}"
FID_MIN_IMAGES = 100


class FIDMetric:
    name = "fid"

    def __init__(self, device="auto", weights_dir=None, random_init: bool = False, min_images: int = FID_MIN_IMAGES):
        try:
            from pytorch_fid import inception as pfi
        except ImportError:
            raise MetricUnavailable("FID needs the pytorch-fid package (pip install pytorch-fid==0.3.0)") from None
        self.device = resolve_device(device)
        self.min_images = min_images
        path = None
        if not random_init:
            path = find_weights([FID_FILE], weights_dir, [_hub_checkpoints()])
            if path is None:
                raise MetricUnavailable(f"FID needs the Inception weights {FID_FILE}: download {FID_URL} "
                                        f"into --weights DIR or {_hub_checkpoints()}")

        # pytorch-fid fetches its weights by URL; hand it our file (or nothing, for random init) instead
        def load(_url, **_kw):
            if path is None:
                return None
            return torch.load(path, map_location="cpu", weights_only=True)

        original = pfi.fid_inception_v3

        def build():
            if path is not None:
                return original()
            net = pfi._inception_v3(num_classes=1008, aux_logits=False, weights=None)
            for n, m in net.named_modules():   # init_weights=False leaves garbage; make it deterministic-ish
                if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                    torch.nn.init.kaiming_normal_(m.weight)
            return net

        with mock.patch.object(pfi, "load_state_dict_from_url", load), mock.patch.object(pfi, "fid_inception_v3", build):
            self.net = pfi.InceptionV3([3], resize_input=True, normalize_input=True).eval().to(self.device)

    @torch.no_grad()
    def features(self, images: list[np.ndarray], batch: int = 16) -> np.ndarray:
        out = []
        for i in range(0, len(images), batch):
            x = _to_tensor(images[i:i + batch], self.device)
            out.append(self.net(x)[0].reshape(x.shape[0], -1).double().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 2048))

    def __call__(self, preds: list[np.ndarray], gts: list[np.ndarray]) -> float:
        return self.from_features(self.features(preds), self.features(gts))

    def from_features(self, fa: np.ndarray, fb: np.ndarray) -> float:
        """FID of pooled features (callers accumulate features, not images: a test set's images
        would not fit in memory)."""
        n = min(len(fa), len(fb))
        if n < self.min_images:
            raise MetricUnavailable(f"FID needs at least {self.min_images} images per side (have {n})")
        return frechet_distance(fa, fb)


def frechet_distance(fa: np.ndarray, fb: np.ndarray, eps: float = 1e-6) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 sqrt(S_a S_b)) of two feature sets (pytorch-fid's formula,
    including its eps offset when the product is singular)."""
    from scipy import linalg
    mu_a, mu_b = fa.mean(0), fb.mean(0)
    sa, sb = np.atleast_2d(np.cov(fa, rowvar=False)), np.atleast_2d(np.cov(fb, rowvar=False))
    covmean = linalg.sqrtm(sa.dot(sb))
    if not np.isfinite(covmean).all():
        off = np.eye(sa.shape[0]) * eps
        covmean = linalg.sqrtm((sa + off).dot(sb + off))
    covmean = covmean.real
    diff = mu_a - mu_b
    return float(diff.dot(diff) + np.trace(sa) + np.trace(sb) - 2 * np.trace(covmean))

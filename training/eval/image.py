"""Image metrics of the papers (REFERENCE section 5), on images composited on white.

Every image here is an ``[H, W, 3]`` float32 array in [0, 1] (``on_white``
converts PIL images / uint8 / RGBA).  Scores follow the papers' scales:
PSNR in dB, SSIM x 100, LPIPS x 100, CLIP x 100.

Metrics that need pretrained weights (LPIPS' AlexNet trunk, CLIP ViT-B/32,
FID's Inception) look for them in ``--weights DIR`` first, then in the
standard caches; when absent they raise ``MetricUnavailable`` naming the file
to download, so the caller reports that metric as unavailable and still
computes the others (never a silent zero).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from training.images import on_white  # noqa: F401  (re-exported: the metrics take images on white)

PSNR_CAP_DB = 100.0                   # identical images: MSE floored at 1e-10 -> 100 dB
_MSE_FLOOR = 10.0 ** (-PSNR_CAP_DB / 10.0)


class MetricUnavailable(Exception):
    """A metric cannot be computed here (usually: pretrained weights missing); the message says why."""


# ------------------------------------------------------------------ images



def _check_pair(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(f"image shapes differ: {a.shape} vs {b.shape}")


def _to_tensor(images, device) -> torch.Tensor:
    """list of [H,W,3] arrays -> [B,3,H,W] float tensor in [0,1]."""
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous().to(device)


# ------------------------------------------------------------------ PSNR / SSIM

def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB with data range 1; identical images give PSNR_CAP_DB."""
    _check_pair(a, b)
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float(10.0 * np.log10(1.0 / max(mse, _MSE_FLOOR)))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM x 100, Wang et al. 2004 settings: gaussian window sigma 1.5, K1 .01, K2 .03, data range 1."""
    from skimage.metrics import structural_similarity
    _check_pair(a, b)
    return 100.0 * float(structural_similarity(a, b, data_range=1.0, channel_axis=-1, gaussian_weights=True,
                                               sigma=1.5, use_sample_covariance=False))


def ssim_batch(preds: list[np.ndarray], gts: list[np.ndarray], device="cpu", batch: int = 16) -> np.ndarray:
    """Same numbers as ``ssim`` (11x11 Gaussian window, sigma 1.5, mean over the valid region, which is
    what scikit-image's border crop gives), batched through kornia so it runs on the GPU."""
    import kornia
    device = resolve_device(device)
    out = []
    for i in range(0, len(preds), batch):
        a = _to_tensor(preds[i:i + batch], device).double()
        b = _to_tensor(gts[i:i + batch], device).double()
        out.append(kornia.metrics.ssim(a, b, 11, max_val=1.0, padding="valid").mean((1, 2, 3)).cpu())
    return 100.0 * torch.cat(out).numpy() if out else np.zeros(0)


# ------------------------------------------------------------------ weights lookup

def _hub_checkpoints() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def find_weights(names: list[str], weights_dir=None, cache_dirs=()) -> Path | None:
    """First existing file among ``names`` in ``weights_dir`` then the cache folders."""
    dirs = ([Path(weights_dir)] if weights_dir else []) + [Path(d) for d in cache_dirs]
    for d in dirs:
        for n in names:
            if (d / n).is_file():
                return d / n
    return None


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


# ------------------------------------------------------------------ LPIPS

ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
ALEXNET_URL = f"https://download.pytorch.org/models/{ALEXNET_FILE}"


class LPIPSMetric:
    """LPIPS (AlexNet, v0.1) x 100.  The linear layers ship inside the lpips wheel;
    the AlexNet trunk comes from ``--weights DIR`` or the torch hub cache."""

    name = "lpips"

    def __init__(self, device="auto", weights_dir=None, random_init: bool = False):
        try:
            import lpips
        except ImportError:
            raise MetricUnavailable("LPIPS needs the lpips package (pip install lpips==0.1.4)") from None
        self.device = resolve_device(device)
        path = None
        if not random_init:
            path = find_weights([ALEXNET_FILE], weights_dir, [_hub_checkpoints()])
            if path is None:
                raise MetricUnavailable(f"LPIPS needs the AlexNet trunk {ALEXNET_FILE}: download {ALEXNET_URL} "
                                        f"into --weights DIR or {_hub_checkpoints()}")
        # pnet_rand=True builds the trunk without torchvision trying to download it
        net = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False)
        if path is not None:
            sd = torch.load(path, map_location="cpu", weights_only=True)
            for sl in [net.net.slice1, net.net.slice2, net.net.slice3, net.net.slice4, net.net.slice5]:
                for idx, mod in sl.named_children():
                    own = mod.state_dict()
                    if own:
                        mod.load_state_dict({k: sd[f"features.{idx}.{k}"] for k in own})
        self.net = net.eval().to(self.device)

    @torch.no_grad()
    def __call__(self, preds: list[np.ndarray], gts: list[np.ndarray], batch: int = 8) -> np.ndarray:
        out = []
        for i in range(0, len(preds), batch):
            a = _to_tensor(preds[i:i + batch], self.device) * 2 - 1
            b = _to_tensor(gts[i:i + batch], self.device) * 2 - 1
            out.append(self.net(a, b).reshape(-1).float().cpu())
        return 100.0 * torch.cat(out).numpy().astype(np.float64) if out else np.zeros(0)


# ------------------------------------------------------------------ CLIP

CLIP_HF_REPO = "timm/vit_base_patch32_clip_224.openai"
CLIP_FILES = ["open_clip_model.safetensors", "open_clip_pytorch_model.bin", "ViT-B-32.pt"]
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CLIP_SIZE = 224


def _clip_cached_file() -> Path | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover
        return None
    for name in CLIP_FILES[:2]:
        p = try_to_load_from_cache(CLIP_HF_REPO, name)
        if isinstance(p, str) and os.path.isfile(p):
            return Path(p)
    p = Path(os.path.expanduser("~/.cache/clip/ViT-B-32.pt"))  # OpenAI's own cache
    return p if p.is_file() else None


def clip_preprocess(images: torch.Tensor, size: int = CLIP_SIZE) -> torch.Tensor:
    """[B,3,H,W] in [0,1] -> CLIP input.  Pads to a square with white (never
    distorts or cuts a wide image: REFERENCE lists the distorting crop as a
    defect), then resizes (bicubic, antialiased) and normalises."""
    B, C, H, W = images.shape
    s = max(H, W)
    if H != W:
        top, left = (s - H) // 2, (s - W) // 2
        images = F.pad(images, (left, s - W - left, top, s - H - top), value=1.0)
    if s != size:
        images = F.interpolate(images, size=(size, size), mode="bicubic", antialias=True, align_corners=False)
    images = images.clamp(0, 1)
    mean = torch.tensor(CLIP_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=images.device).view(1, 3, 1, 1)
    return (images - mean) / std


class CLIPMetric:
    """Cosine similarity of OpenAI CLIP ViT-B/32 image embeddings x 100 (open_clip)."""

    name = "clip"

    def __init__(self, device="auto", weights_dir=None, random_init: bool = False):
        try:
            import open_clip
        except ImportError:
            raise MetricUnavailable("CLIP needs the open_clip package (pip install open_clip_torch==3.3.0)") from None
        self.device = resolve_device(device)
        if random_init:
            model = open_clip.create_model("ViT-B-32-quickgelu", pretrained=None)
        else:
            path = find_weights(CLIP_FILES, weights_dir) or _clip_cached_file()
            if path is None:
                raise MetricUnavailable(
                    f"CLIP needs OpenAI ViT-B/32 weights: download https://huggingface.co/{CLIP_HF_REPO}/resolve/main/"
                    f"{CLIP_FILES[0]} into --weights DIR (or the Hugging Face cache)")
            if path.suffix == ".pt":     # OpenAI's TorchScript archive
                from open_clip.openai import load_openai_model
                model = load_openai_model(str(path), device="cpu", jit=False)
            else:
                model = open_clip.create_model("ViT-B-32-quickgelu", pretrained=str(path))
        self.model = model.eval().to(self.device)

    @torch.no_grad()
    def embed(self, images: list[np.ndarray], batch: int = 32) -> torch.Tensor:
        out = []
        for i in range(0, len(images), batch):
            x = clip_preprocess(_to_tensor(images[i:i + batch], self.device))
            out.append(F.normalize(self.model.encode_image(x).float(), dim=-1).cpu())
        return torch.cat(out) if out else torch.zeros(0, 512)

    def __call__(self, preds: list[np.ndarray], gts: list[np.ndarray], batch: int = 32) -> np.ndarray:
        a, b = self.embed(preds, batch), self.embed(gts, batch)
        return 100.0 * (a * b).sum(-1).numpy().astype(np.float64)


# ------------------------------------------------------------------ all pairwise metrics together

PAIR_METRICS = ("clip", "lpips", "psnr", "ssim")


class ImageMetrics:
    """Loads what it can; ``unavailable`` maps metric name -> reason for the rest."""

    def __init__(self, device="auto", weights_dir=None, random_init: bool = False,
                 metrics=PAIR_METRICS):
        self.device = resolve_device(device)
        self.networks: dict = {}
        self.unavailable: dict[str, str] = {}
        self.metrics = tuple(metrics)
        for name, cls in (("lpips", LPIPSMetric), ("clip", CLIPMetric)):
            if name not in self.metrics:
                continue
            try:
                self.networks[name] = cls(device, weights_dir, random_init)
            except MetricUnavailable as e:
                self.unavailable[name] = str(e)

    def available(self) -> list[str]:
        return [m for m in self.metrics if m not in self.unavailable]

    def __call__(self, preds: list[np.ndarray], gts: list[np.ndarray]) -> dict[str, np.ndarray]:
        """Per-pair scores for every available metric: {name: [N] array}."""
        if len(preds) != len(gts):
            raise ValueError("need as many predictions as ground-truth images")
        for a, b in zip(preds, gts):
            _check_pair(a, b)
        out = {}
        if "psnr" in self.metrics:
            out["psnr"] = np.array([psnr(a, b) for a, b in zip(preds, gts)])
        if "ssim" in self.metrics:
            small = min(min(a.shape[:2]) for a in preds) < 11 if preds else True
            out["ssim"] = np.array([ssim(a, b) for a, b in zip(preds, gts)]) if small else \
                ssim_batch(preds, gts, self.device)
        for name, net in self.networks.items():
            out[name] = net(preds, gts)
        return out

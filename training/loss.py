"""Losses of the conditional EG3D training (REFERENCE section 4).

One ``ReconGANLoss`` object runs the four phases of a StyleGAN2-style step:

- ``Gmain``: non-saturating GAN loss on a random perspective view plus the
  reconstruction of the orthographic views (LPIPS, L1, alpha L2 outside the
  silhouette band, depth L2 on mutually opaque pixels), per-view weights.
- ``Greg``: density total-variation regulariser (lazy, every ``tv_interval``).
- ``Dmain``: non-saturating GAN loss on real and fake images.
- ``Dreg``: R1 on real images (lazy, every ``r1_interval``), on ``image`` and
  ``image_raw`` like EG3D, plus the mask-branch R1 of the mask discriminator.

The loss only calls backward; the loop owns optimisers and gradient sync.
Each phase's use of its network (G or D) happens inside one call
``G_call(fn, *args)`` / ``D_call(fn, *args)`` = ``fn(net, *args)``: in
multi-process training that call is the forward of the network's
DistributedDataParallel wrapper (``training_loop.PhaseForward``), so DDP sees
exactly one forward per backward and its reducer averages the gradients
while backward runs.
Randomness that decides results (z, regulariser points) is drawn per sample
from (seed, step, sample id), so 1 process and N processes with the same
global batch compute the same gradients.
"""
from __future__ import annotations

import contextlib
import dataclasses
import zlib
from pathlib import Path

import torch
import torch.nn.functional as F

from training import cameras
from training.errors import UserError
from training.dual_discriminator import join_pair, pair_group, split_pair
from training.networks_stylegan2 import fold_setting

OPAQUE = 0.5  # alpha above which a pixel counts as surface (depth term, silhouette)


@dataclasses.dataclass
class LossConfig:
    """Every weight of the objective; each is a CLI flag of the trainer."""
    gan_weight: float = 1.0            # generator adversarial term (0: pure reconstruction)
    gan_start_kimg: float = 0.0        # reconstruction-only warm-up: G's adversarial term, D and R1 start here
    random_z: bool = True              # random latent per sample and step (off: z = 0, deterministic output)
    r1_gamma: float = 5.0              # NOVA-3D 5 (EG3D R1 on image and image_raw)
    r1_gamma_mask: float = 1.0         # R1 of the mask branch (MaskDualDiscriminator)
    r1_interval: int = 16              # lazy R1: every N steps, scaled by N
    r1_bf16: bool = False              # R1 under bf16 autocast when --bf16 is on (faster; default fp32)
    d_pair: bool = True                # D main runs fakes and reals as one batch (same groups, same logits)
    d_fresh_fakes: bool = False        # D main renders its own fakes (a second G forward without gradients,
                                       # a fresh z), as EG3D does; off: Gmain's fakes, detached (one render less)
    blur_init_sigma: float = 10.0      # discriminator input blur at kimg 0 (pixels)
    blur_fade_kimg: float = 200.0      # blur fades linearly to 0 over this many kimg
    lpips_weight: float = 20.0         # NOVA-3D 20, PAniC-3D 10
    lpips_net: str = "vgg"             # lpips backbone: vgg | alex
    lpips_random_init: bool = False    # tests only: random LPIPS backbone, no download
    l1_weight: float = 4.0  # L1 of the ortho views (NOVA-3D 4, PAniC-3D 1)
    alpha_weight: float = 1.0          # alpha L2 outside the silhouette band
    alpha_band_px: int = 2             # half width of the excluded band around the GT silhouette, in pixels
                                       # of a 128-px rendering (scaled with the neural rendering size)
    depth_weight: float = 1000.0       # L2 (metres^2) of surface points where both alphas are opaque
    recon_sr_weight: float = 1.0       # relative weight of LPIPS/L1 on the super-resolved image
    recon_raw_weight: float = 1.0      # ... and on the raw neural rendering
    view_weights: str = "front=1"      # per ortho view; NOVA: front=1,back=1,left=1,right=1
    batch_views: bool = True           # render all reconstruction views in one call (faster, same memory)
    # reconstruction on full-resolution ray patches of several views (dataset.RaySampling, on when the
    # trainer's --ray-views > 0): rendered straight from the field, no super-resolution in between
    ray_l1_weight: float = 1.0         # L1 of RGB on white
    ray_ssim_weight: float = 0.0       # 1 - SSIM (7x7 Gaussian window) of the RGB patches
    ray_grad_weight: float = 0.0       # L1 between the image gradients (finite differences) of the patches
    ray_alpha_weight: float = 1.0      # L2 of alpha
    ray_depth_weight: float = 0.0      # L1 of surface points in units of the box side (the same weight for
                                       # head and body framing), on pixels opaque in both
    tv_weight: float = 0.5             # density total variation
    tv_interval: int = 4  # lazy density TV: every N steps, scaled by N
    tv_points: int = 1000  # random points per sample for the density TV
    tv_perturb: float = 0.004          # in triplane units ([-1, 1] spans the box)


def parse_view_weights(spec: str) -> dict[str, float]:
    out = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, w = part.partition("=")
        try:
            out[name.strip()] = float(w) if w else 1.0
        except ValueError:
            raise UserError(f"--view-weights: {part!r} is not name=weight") from None
    return out


# ----------------------------------------------------------------- helpers

def sample_generator(seed: int, step: int, sample_id: str, tag: str, device) -> torch.Generator:
    """A generator fixed by (seed, step, sample, purpose): same noise on any number of ranks."""
    g = torch.Generator(device="cpu")
    g.manual_seed(zlib.crc32(f"{seed}/{step}/{sample_id}/{tag}".encode()))
    return g


def per_sample_randn(ids, shape, seed: int, step: int, tag: str, device) -> torch.Tensor:
    rows = [torch.randn(shape, generator=sample_generator(seed, step, i, tag, device)) for i in ids]
    return torch.stack(rows).to(device)


def per_sample_rand(ids, shape, seed: int, step: int, tag: str, device) -> torch.Tensor:
    rows = [torch.rand(shape, generator=sample_generator(seed, step, i, tag, device)) for i in ids]
    return torch.stack(rows).to(device)


def gan_active(cfg: LossConfig, cur_nimg: float) -> bool:
    return cfg.gan_weight > 0 and cur_nimg >= cfg.gan_start_kimg * 1e3


def blur_sigma(cfg: LossConfig, cur_nimg: float) -> float:
    """D's input blur: blur_init_sigma when the GAN starts, fading to 0 over blur_fade_kimg."""
    if cfg.blur_fade_kimg <= 0:
        return 0.0
    since = max(cur_nimg - cfg.gan_start_kimg * 1e3, 0.0)
    return max(1.0 - since / (cfg.blur_fade_kimg * 1e3), 0.0) * cfg.blur_init_sigma


def resize(img: torch.Tensor, size: int) -> torch.Tensor:
    """Antialiased resize to size x size (area-like when shrinking)."""
    if img.shape[-1] == size and img.shape[-2] == size:
        return img
    return F.interpolate(img, size=(size, size), mode="bilinear", align_corners=False,
                         antialias=img.shape[-1] > size)


def silhouette_band(alpha: torch.Tensor, px: int) -> torch.Tensor:
    """1 on pixels within ``px`` pixels of the silhouette edge of ``alpha`` [B,1,H,W], else 0."""
    if px <= 0:
        return torch.zeros_like(alpha)
    inside = (alpha > OPAQUE).float()
    k = 2 * px + 1
    dilated = F.max_pool2d(inside, k, stride=1, padding=px)
    eroded = 1.0 - F.max_pool2d(1.0 - inside, k, stride=1, padding=px)
    return dilated - eroded


def band_pixels(band_px_at_128: int, res: int) -> int:
    """The silhouette band at this rendering size: a fixed pixel count would swallow thin limbs
    whole at small sizes (2 px at 16 px is the whole arm), leaving the silhouette unsupervised."""
    return int(round(band_px_at_128 * res / 128))


def alpha_loss(pred_alpha: torch.Tensor, gt_alpha: torch.Tensor, band_px: int) -> torch.Tensor:
    """L2 between alphas, ignoring the band around the GT silhouette (antialiasing, thin hair)."""
    keep = 1.0 - silhouette_band(gt_alpha, band_px)
    # per-sample means, then the batch mean: every character counts the same, and the loss of a
    # batch split over N processes averages back to the loss of the whole batch
    per = ((pred_alpha - gt_alpha).square() * keep).flatten(1).sum(1) / keep.flatten(1).sum(1).clamp_min(1.0)
    return per.mean()


def depth_loss(pred_xyz, pred_alpha, gt_xyz, gt_alpha) -> torch.Tensor:
    """L2 of surface points (metres) on pixels opaque in both the rendering and the GT."""
    both = ((pred_alpha.detach() > OPAQUE) & (gt_alpha > OPAQUE)).float()
    err = (pred_xyz - gt_xyz).square().sum(1, keepdim=True)
    return ((err * both).flatten(1).sum(1) / both.flatten(1).sum(1).clamp_min(1.0)).mean()


def ssim(a: torch.Tensor, b: torch.Tensor, window: int = 7) -> torch.Tensor:
    """Mean SSIM of images [N,C,H,W] in [0, 1] (kornia: Gaussian window, sigma 1.5; valid region only, as
    the evaluation's SSIM in metrics.image)."""
    import kornia
    window = min(window, a.shape[-1], a.shape[-2])
    window -= 1 - window % 2            # an odd window that fits the patch
    return kornia.metrics.ssim(a.float(), b.float(), window, max_val=1.0, padding="valid").mean()


def image_gradients(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x[..., :, 1:] - x[..., :, :-1], x[..., 1:, :] - x[..., :-1, :]


def r1_inputs(real: dict, channels_last: bool = True) -> dict:
    """Detached copies of D's real inputs that require grad, for R1.  Channels-last by default: the eager
    D's cuDNN convs (forward, backward and double backward) then run without NCHW<->NHWC transposes (R1
    phase on the H100: 157 -> 117 ms); the same numbers."""
    layout = torch.channels_last if channels_last else torch.contiguous_format
    return {k: v.detach().contiguous(memory_format=layout).requires_grad_(True) for k, v in real.items()}


def r1_terms(D, real: dict, c: torch.Tensor, mask: bool = False, sigma: float = 0.0):
    """R1 of D at the real inputs ``real`` (r1_inputs), blurred by ``sigma`` (D.blur_inputs) on the way in:
    (penalty [B] over image and image_raw as in EG3D, the mask branch's penalty [B] over image_mask when
    ``mask`` else None, keep).  ``keep`` = every logit * 0: it holds each D parameter in the graph (the
    output layers' biases get no R1 gradient), as DDP without find_unused_parameters needs a gradient for
    every parameter.  The two branches of a mask D read disjoint inputs, so one gradient of the summed
    logits gives both penalties.  Eager, through _Conv2d's cuDNN kernels: compiled whole through
    torch.func.grad it ran (same numbers on the CPU) but took 636 ms on the H100 against the eager 129 ms:
    the compiled double backward computes each conv's weight term as a conv whose kernel is
    the gradient image, the slow path _Conv2d exists to avoid."""
    keys = ["image", "image_raw"] + (["image_mask"] if mask else [])
    li, lm = run_D(D, D.blur_inputs(real, sigma), c)
    li, lm = li.float().sum(), (lm.float().sum() if lm is not None else None)
    total = li + (lm if mask else 0)
    with torch.autocast(c.device.type, enabled=False):     # D's forward may run under autocast; not this
        grads = torch.autograd.grad(total, [real[k] for k in keys], create_graph=True)
    sq = [g.float().square().flatten(1).sum(1) for g in grads]
    keep = li * 0 + (lm * 0 if lm is not None else 0)
    return sq[0] + sq[1], (sq[2] if mask else None), keep


def density_tv(G, planes, ids, seed: int, step: int, box, n_points: int, perturb: float) -> torch.Tensor:
    """EG3D density regulariser: L1 between densities at random points and slightly moved points.

    ``box``: the ROI side (float, or [B] per sample); points are drawn in the ROI cube.
    """
    dev = next(iter(G.parameters())).device
    u = per_sample_rand(ids, (n_points, 3), seed, step, "tv", dev) * 2 - 1
    du = per_sample_randn(ids, (n_points, 3), seed, step, "tv_p", dev) * perturb
    half = torch.as_tensor(box, dtype=u.dtype, device=dev).reshape(-1, 1, 1) / 2
    pts = torch.cat([u, u + du], 1) * half               # triplane units -> framed metres
    sigma = G.sample_density(planes, pts)
    return (sigma[:, :n_points] - sigma[:, n_points:]).abs().mean()


# ----------------------------------------------------------------- LPIPS

LPIPS_BACKBONE_FILES = {
    "vgg": "vgg16-397923af.pth",
    "alex": "alexnet-owt-7be5be79.pth",
}


def load_lpips(net: str, random_init: bool = False):
    """The LPIPS metric as a frozen module; its backbone comes from torchvision's hub cache."""
    try:
        import lpips
    except ImportError:
        raise UserError("lpips: package not installed (pip install lpips==0.1.4), or pass --lpips-weight 0") from None
    if net not in LPIPS_BACKBONE_FILES:
        raise UserError(f"--lpips-net: {net!r} is not one of {sorted(LPIPS_BACKBONE_FILES)}")
    if not random_init:
        ckpt = Path(torch.hub.get_dir()) / "checkpoints" / LPIPS_BACKBONE_FILES[net]
        if not ckpt.exists():
            url = f"https://download.pytorch.org/models/{LPIPS_BACKBONE_FILES[net]}"
            raise UserError(f"{ckpt}: LPIPS backbone weights missing; download {url} to that path, "
                            "or train with --lpips-weight 0")
    import io
    import warnings
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():  # lpips prints; torchvision warns
        warnings.simplefilter("ignore")
        m = lpips.LPIPS(net=net, pretrained=True, pnet_rand=random_init, verbose=False)
    m.eval().requires_grad_(False)
    return m


# ----------------------------------------------------------------- discriminator call

def run_D(D, img: dict, c: torch.Tensor):
    """(image-branch logits [B,1], mask-branch logits [B,1] or None) of inputs already blurred (the caller
    applies the blur fade: DualDiscriminator.blur_inputs)."""
    if "image_mask" in img:
        out = D(img, c, return_parts=True)
        return out["logits_image"], out["logits_mask"]
    return D(img, c), None


# ----------------------------------------------------------------- the loss

class ReconGANLoss:
    """Runs one phase of a training step on this rank's part of the batch and calls backward.

    ``G_call``/``D_call``: ``call(fn, *args) -> fn(net, *args)``; the DDP wrappers of the loop in
    multi-process training, plain calls of G/D when None.
    """

    def __init__(self, G, D, cfg: LossConfig, box: float, seed: int = 0,
                 neural_rendering_resolution: int | None = None, use_mask_d: bool = False,
                 autocast_dtype: torch.dtype | None = None, lpips_module=None,
                 ortho_views=("front", "back", "left", "right"), render_kwargs: dict | None = None,
                 G_call=None, D_call=None, D_compiled=None):
        self.G, self.D, self.cfg, self.box, self.seed = G, D, cfg, box, seed
        # D_first: a torch.compile'd D sharing D's parameters, for Gmain and (single process) Dmain; R1
        # differentiates the eager D twice
        self.D_first = D_compiled if D_compiled is not None else D
        self.G_call = G_call or (lambda fn, *args: fn(self.G, *args))
        self.D_call = D_call or (lambda fn, *args: fn(self.D, *args))
        self.Dmain_call = D_call or (lambda fn, *args: fn(self.D_first, *args))
        self.ortho_views = list(ortho_views)
        self.render_kwargs = dict(render_kwargs or {})
        self.nrr = neural_rendering_resolution
        self.use_mask_d = use_mask_d
        self.autocast_dtype = autocast_dtype
        self.view_weights = parse_view_weights(cfg.view_weights)
        self.lpips = lpips_module
        if self.lpips is None and cfg.lpips_weight > 0:
            self.lpips = load_lpips(cfg.lpips_net, cfg.lpips_random_init)
        if self.lpips is not None and G is not None:   # load_lpips builds it on the CPU; images are on G's
            self.lpips.to(next(G.parameters()).device)
        self._fake = None  # fakes of the last Gmain, reused (detached) by Dmain

    # -- generator side

    def _autocast(self, device):
        enabled = self.autocast_dtype is not None
        return torch.autocast(device_type=device.type, dtype=self.autocast_dtype or torch.bfloat16, enabled=enabled)

    def _z(self, batch, step):
        z_dim = int(getattr(self.G, "z_dim", 0) or 0)
        if z_dim <= 0 or not self.cfg.random_z:
            return None
        return per_sample_randn(batch["id"], (z_dim,), self.seed, step, "z", batch["rgb_cam"].device)

    @staticmethod
    def cond_of(batch) -> dict:
        cond = {"front": batch["cond_front"], "back": batch["cond_back"]}
        if "cond_front_mask" in batch:
            cond["front_mask"] = batch["cond_front_mask"]
            cond["back_mask"] = batch["cond_back_mask"]
        if "feat_front" in batch:
            cond["feat_front"] = batch["feat_front"]
        return cond

    LPIPS_MIN = 64  # the backbones' pooling needs at least this many pixels

    def lpips_distance(self, pred, gt):
        if pred.shape[-1] < self.LPIPS_MIN:
            pred, gt = resize(pred, self.LPIPS_MIN), resize(gt, self.LPIPS_MIN)
        return self.lpips(pred, gt).mean()

    def _render(self, G, planes, c):
        kw = dict(self.render_kwargs)
        if self.nrr is not None:
            kw["neural_rendering_resolution"] = self.nrr
        return G.render(planes, c, **kw)

    def _fake_for_D(self, out) -> dict:
        img = {"image": out["image"], "image_raw": out["image_raw"]}
        if self.use_mask_d:
            img["image_mask"] = out["image_alpha"]
        return img

    def real_for_D(self, batch, out_like: dict | None = None) -> dict:
        rgb = batch["rgb"]
        S = out_like["image"].shape[-1] if out_like else rgb.shape[-1]
        n = out_like["image_raw"].shape[-1] if out_like else (self.nrr or rgb.shape[-1])
        img = {"image": resize(rgb, S), "image_raw": resize(rgb, n)}
        if self.use_mask_d:
            img["image_mask"] = resize(batch["rgb_mask"].float(), n)
        return img

    def _render_views(self, G, planes, cams: list[torch.Tensor]) -> list[dict]:
        """Render the same planes from several [B,25] cameras; one call with the planes repeated when allowed."""
        if len(cams) < 2 or not self.cfg.batch_views or not isinstance(planes, (dict, torch.Tensor)):
            return [self._render(G, planes, c) for c in cams]
        V, B = len(cams), cams[0].shape[0]

        def rep(x):
            return torch.cat([x] * V) if torch.is_tensor(x) else x
        out = self._render(G, {k: rep(x) for k, x in planes.items()} if isinstance(planes, dict) else rep(planes),
                           torch.cat(cams))
        return [{k: (x[i * B:(i + 1) * B] if torch.is_tensor(x) and x.shape[:1] == (V * B,) else x)
                 for k, x in out.items()} for i in range(V)]

    def reconstruction(self, G, planes, batch) -> tuple[torch.Tensor, dict]:
        """Weighted reconstruction of the ortho views present in the batch (rendered by G from ``planes``)."""
        cfg, stats = self.cfg, {}
        used = [(v, name) for v, name in enumerate(self.ortho_views) if self.view_weights.get(name, 0.0) > 0]
        outs = self._render_views(G, planes, [batch["ortho_cam"][:, v] for v, _ in used])
        total = batch["ortho_rgb"].new_zeros(())
        for (v, name), out in zip(used, outs):
            w = self.view_weights[name]
            gt_rgb, gt_alpha, gt_xyz = batch["ortho_rgb"][:, v], batch["ortho_alpha"][:, v], batch["ortho_xyz"][:, v]
            n = out["image_raw"].shape[-1]
            terms = {}
            for key, rel in (("image", cfg.recon_sr_weight), ("image_raw", cfg.recon_raw_weight)):
                if rel <= 0:
                    continue
                pred = out[key].float()
                gt = resize(gt_rgb, pred.shape[-1])
                if cfg.l1_weight > 0:
                    terms[f"l1_{key}"] = rel * cfg.l1_weight * (pred - gt).abs().mean()
                if cfg.lpips_weight > 0:
                    terms[f"lpips_{key}"] = rel * cfg.lpips_weight * self.lpips_distance(pred, gt)
            a_gt = resize(gt_alpha, n)
            if cfg.alpha_weight > 0:
                terms["alpha"] = cfg.alpha_weight * alpha_loss(out["image_alpha"].float(), a_gt,
                                                               band_pixels(cfg.alpha_band_px, n))
            if cfg.depth_weight > 0:
                # nearest keeps surface points on the surface (no blending across depth edges)
                xyz_gt = F.interpolate(gt_xyz, size=(n, n), mode="nearest") if gt_xyz.shape[-1] != n else gt_xyz
                a_gt_n = F.interpolate(gt_alpha, size=(n, n), mode="nearest") if gt_alpha.shape[-1] != n else gt_alpha
                terms["depth"] = cfg.depth_weight * depth_loss(out["image_xyz"].float(), out["image_alpha"].float(),
                                                               xyz_gt, a_gt_n)
            view_total = sum(terms.values())
            total = total + w * view_total
            for k, t in terms.items():
                stats[f"recon/{name}/{k}"] = t.detach()
        stats["recon/total"] = total.detach()
        return total, stats

    def ray_reconstruction(self, G, planes, batch) -> tuple[torch.Tensor, dict]:
        """Losses on the full-resolution pixel patches of the batch (ray_* keys, dataset.RaySampling): their
        rays are marched through the field of ``planes`` (G.render_rays) and compared pixel by pixel."""
        cfg = self.cfg
        uv = batch["ray_uv"]                                   # [B,M,Q,2]: M patches of Q = P*P pixels
        B, M, Q = uv.shape[:3]
        P = batch["ray_rgb"].shape[-1]
        o, d = cameras.rays(batch["ray_cam"].reshape(B * M, 25), 0, uv=uv.reshape(B * M, Q, 2))
        kw = {k: v for k, v in self.render_kwargs.items() if k != "neural_rendering_resolution"}
        out = G.render_rays(planes, o.reshape(B, M * Q, 3), d.reshape(B, M * Q, 3), **kw)

        def patches(x):                                        # [B,M*Q,C] -> [B*M,C,P,P]
            return x.float().reshape(B * M, P, P, -1).permute(0, 3, 1, 2)
        pred, alpha = patches(out["rgb"]), patches(out["alpha"][..., None])
        gt, gt_alpha = batch["ray_rgb"].flatten(0, 1).float(), batch["ray_alpha"].flatten(0, 1).float()
        terms = {}
        if cfg.ray_l1_weight > 0:
            terms["l1"] = cfg.ray_l1_weight * (pred - gt).abs().mean()
        if cfg.ray_ssim_weight > 0:
            terms["ssim"] = cfg.ray_ssim_weight * (1 - ssim((pred + 1) / 2, (gt + 1) / 2))
        if cfg.ray_grad_weight > 0:
            gp, gg = image_gradients(pred), image_gradients(gt)
            terms["grad"] = cfg.ray_grad_weight * 0.5 * sum((p - g).abs().mean() for p, g in zip(gp, gg))
        if cfg.ray_alpha_weight > 0:
            terms["alpha"] = cfg.ray_alpha_weight * (alpha - gt_alpha).square().mean()
        if cfg.ray_depth_weight > 0 and "ray_xyz" in batch:
            box = (batch["box"].float() if "box" in batch else torch.full((B,), self.box, device=uv.device))
            box = box.to(uv.device).repeat_interleave(M).reshape(-1, 1, 1, 1)
            both = ((alpha.detach() > OPAQUE) & (gt_alpha > OPAQUE)).float()
            err = (patches(out["xyz"]) - batch["ray_xyz"].flatten(0, 1).float()).abs().sum(1, keepdim=True) / box
            terms["depth"] = cfg.ray_depth_weight * ((err * both).flatten(1).sum(1)
                                                     / both.flatten(1).sum(1).clamp_min(1.0)).mean()
        total = sum(terms.values()) if terms else uv.new_zeros(())
        stats = {f"ray/{k}": t.detach() for k, t in terms.items()}
        stats["ray/total"] = total.detach()
        with torch.no_grad():    # PSNR of the patches (RGB in [0, 1]): a reading comparable across runs
            mse = ((pred - gt) / 2).square().flatten(1).mean(1).clamp_min(1e-10)
            stats["ray/psnr"] = (-10 * torch.log10(mse)).mean()
        return total, stats

    def accumulate_gradients(self, phase: str, batch: dict, gain: float, step: int,
                             cur_nimg: float) -> dict | None:
        """Backward of one phase's loss; None when the phase is off at this point (no step to take).  The
        stats are detached 0-d tensors on the device: reading them waits for the GPU, so the loop sums them
        there and reads them once a tick."""
        cfg = self.cfg
        sigma = blur_sigma(cfg, cur_nimg)
        gan = gan_active(cfg, cur_nimg)
        if phase == "Gmain":
            loss, stats, self._fake = self.G_call(self._gmain, batch, step, sigma, gan)
        elif phase == "Greg":
            if cfg.tv_weight <= 0:
                return None
            loss, stats = self.G_call(self._greg, batch, step)
        elif phase == "Dmain":
            if not gan or (self._fake is None and not cfg.d_fresh_fakes):
                return None
            fake = self.fresh_fakes(batch, step) if cfg.d_fresh_fakes else self._fake
            loss, stats = self.Dmain_call(self._dmain, batch, fake, sigma)
        elif phase == "Dreg":
            if not gan or (cfg.r1_gamma <= 0 and cfg.r1_gamma_mask <= 0):
                return None
            loss, stats = self.D_call(self._dreg, batch, sigma)
        else:
            raise ValueError(f"unknown phase {phase!r}")
        loss.mul(gain).backward()
        return stats

    # -- one function per phase: (network, inputs) -> (loss, stats[, fakes]), run as one forward

    def _gmain(self, G, batch, step, sigma, gan=True):
        """Adversarial loss of a random perspective view + reconstruction of the ortho views; also returns
        the (detached) fakes for Dmain."""
        cfg, stats, fake = self.cfg, {}, None
        with self._autocast(batch["rgb_cam"].device):
            planes = G.synthesize(self.cond_of(batch), z=self._z(batch, step))
            loss = batch["rgb"].new_zeros(())
            if gan:
                out = self._render(G, planes, batch["rgb_cam"])
                # D is called directly: its parameters do not require grad in this phase
                logits, mask_logits = self._run_D(self.D_first, self._fake_for_D(out), batch["rgb_cam"], sigma)
                l_gan = F.softplus(-logits.float()).mean()
                if mask_logits is not None:
                    l_gan = l_gan + F.softplus(-mask_logits.float()).mean()
                loss = loss + cfg.gan_weight * l_gan
                stats["G/gan"] = l_gan.detach()
                fake = {k: v.detach().float() for k, v in self._fake_for_D(out).items()}
            rec, rs = self.reconstruction(G, planes, batch)
            if "ray_uv" in batch:
                ray, rays_stats = self.ray_reconstruction(G, planes, batch)
                rec = rec + ray
                rs.update(rays_stats)
        stats.update(rs)
        loss = loss + rec
        stats["G/loss"] = loss.detach()
        return loss, stats, fake

    @torch.no_grad()
    def fresh_fakes(self, batch, step) -> dict:
        """D main's own fakes (--d-fresh-fakes): G run again without gradients, with a z of its own, from the
        batch's perspective cameras.  The plain G, not its DDP wrapper: no gradient to synchronise."""
        z_dim = int(getattr(self.G, "z_dim", 0) or 0)
        z = (per_sample_randn(batch["id"], (z_dim,), self.seed, step, "z_d", batch["rgb_cam"].device)
             if z_dim > 0 and self.cfg.random_z else None)
        with self._autocast(batch["rgb_cam"].device):
            out = self._render(self.G, self.G.synthesize(self.cond_of(batch), z=z), batch["rgb_cam"])
        return {k: v.float() for k, v in self._fake_for_D(out).items()}

    def _greg(self, G, batch, step):
        """Density total variation (uses only the density path of G: no super-resolution)."""
        planes = G.synthesize(self.cond_of(batch), z=self._z(batch, step))
        box = batch["box"].float() if "box" in batch else self.box
        tv = density_tv(G, planes, batch["id"], self.seed, step, box, self.cfg.tv_points, self.cfg.tv_perturb)
        return tv * self.cfg.tv_weight, {"G/tv": tv.detach()}

    def _dmain(self, D, batch, fake, sigma):
        """Non-saturating D loss on the fakes (the last Gmain's, or fresh ones) and the real perspective view."""
        c = batch["rgb_cam"]
        with self._autocast(c.device):
            real = self.real_for_D(batch, fake)
            group = self._pair_group(fake, real)
            if group is None:
                f_logits, f_mask = self._run_D(D, fake, c, sigma)
                r_logits, r_mask = self._run_D(D, real, c, sigma)
            else:   # one D call on both (dual_discriminator.join_pair: the same minibatch-std groups)
                logits, mask = self._run_D(D, {k: join_pair(fake[k], real[k], group) for k in fake},
                                           join_pair(c, c, group), sigma)
                f_logits, r_logits = split_pair(logits, group)
                f_mask, r_mask = split_pair(mask, group) if mask is not None else (None, None)
        loss = F.softplus(f_logits.float()).mean() + F.softplus(-r_logits.float()).mean()
        if f_mask is not None:
            loss = loss + F.softplus(f_mask.float()).mean() + F.softplus(-r_mask.float()).mean()
        stats = {"D/loss": loss.detach(), "D/real": r_logits.detach().float().mean(),
                 "D/fake": f_logits.detach().float().mean()}
        return loss, stats

    def _run_D(self, D, img, c, sigma):
        """run_D with the blur fade applied here, eagerly: a compiled D keeps one graph while sigma fades."""
        return run_D(D, self.D.blur_inputs(img, sigma), c)

    def _pair_group(self, fake: dict, real: dict) -> int | None:
        """Group size for D main's joined call, None for two calls (off, or joining would change the logits)."""
        if not self.cfg.d_pair or fake.keys() != real.keys() or \
                any(fake[k].shape != real[k].shape for k in fake):
            return None
        return pair_group(self.D, fake["image"].shape[0])

    def _dreg(self, D, batch, sigma):
        """R1 on the real images.  The gradient is taken w.r.t. the images, not D's parameters, so under DDP
        no reducer hook fires inside; backward of the penalty then reaches the parameters through the
        double-backward graph and the reducer averages those gradients."""
        cfg, stats = self.cfg, {}
        # R1 in full precision unless --r1-bf16 (the double backward's rounding is untested for training).
        # Folded FIR convs: the eager optimum, also when Gmain/Dmain run the compiled (unfolded)
        # arithmetic; the same numbers
        c = batch["rgb_cam"]
        real = r1_inputs(self.real_for_D(batch, self._fake))
        with fold_setting(True), self._autocast(c.device) if cfg.r1_bf16 else contextlib.nullcontext():
            pen, pen_m, keep = r1_terms(D, real, c, self.use_mask_d and cfg.r1_gamma_mask > 0, sigma)
        loss = pen.mean() * (cfg.r1_gamma / 2)
        stats["D/r1"] = pen.detach().mean()
        if pen_m is not None:
            loss = loss + pen_m.mean() * (cfg.r1_gamma_mask / 2)
            stats["D/r1_mask"] = pen_m.detach().mean()
        return loss + keep, stats

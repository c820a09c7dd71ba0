"""Artwork -> GLB: time the reconstruction pipeline users run (training.infer.reconstruct.reconstruct), by stage.

    python -m _scripts.bench.infer                                   # nova_body_small, random init, CPU or GPU
    python -m _scripts.bench.infer --ckpt CKPT --device cuda --repeat 3
    python -m _scripts.bench.infer --no-carve                        # worst case: density at every grid node

Stages (summary["seconds"] of the run): load, prepare, encode, ortho renders, turntable (0 frames by
default: the artwork-to-GLB path), mesh (carve renders, density grid, components, marching cubes, vertex
colours), texture (--texture), write.  The first run is a warm-up (allocator, kernels) unless --repeat 1.
The process's CPU time is printed too: on a shared machine the wall time is inflated by other loads.

A random-init generator renders no character, so its field is calibrated (untimed) to look like one to the
mesh stages: the opacity threshold is set so that --hull-fraction of the grid lies inside the carve hull
(a character in the body box: a few per cent), and the marching-cubes level at the median occupancy
inside it, so that the grid, marching cubes and colours do a character's amount of work.  A trained
--ckpt is timed at the thresholds `python -m _scripts.infer` uses (the user's path).
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from _scripts import infer as infer_cli
from training.infer import artwork, meshing
from training.infer import reconstruct as R
from training.errors import UserError, cli_main

REAL = Path(__file__).resolve().parents[3] / "shared" / "data" / "real_models" / "rai_girl"


def default_images(tmp: Path) -> tuple[Path, Path]:
    """The real character's author renders when present, else a drawn figure (front and mirrored back)."""
    f, b = REAL / "author_render_front.png", REAL / "author_render_back.png"
    if f.is_file() and b.is_file():
        return f, b
    from PIL import Image
    img = np.zeros((384, 256, 4), np.uint8)
    img[30:100, 98:158] = (250, 210, 180, 255)
    img[100:270, 88:168] = (60, 90, 200, 255)
    img[110:230, 168:190] = (250, 210, 180, 255)
    img[270:360, 98:158] = (40, 40, 40, 255)
    Image.fromarray(img).save(tmp / "front.png")
    Image.fromarray(img[:, ::-1].copy()).save(tmp / "back.png")
    return tmp / "front.png", tmp / "back.png"


@torch.no_grad()
def calibrate(model: R.Model, front, back, hull_fraction: float, fill: float = 0.75) -> tuple[float, float]:
    """(opacity threshold, density level) at which a random field is carved to ``hull_fraction`` of the grid
    with a surface inside (untimed; see the module docstring)."""
    G, dev = model.G, model.device
    cond = {}
    for k, p in (("front", front), ("back", back)):
        if k == "back" and not G.two_view:
            continue
        img, mask = artwork.to_tensor(artwork.prepare(p, G.framing, 512, fill=fill).rgba, G.cond_resolution)
        cond[k], cond[f"{k}_mask"] = img[None].to(dev), mask[None].to(dev)
    planes = G.synthesize(cond)
    views = meshing.mesh_views(G.framing)
    renders = meshing.render_raw(G, planes, {k: views[k] for k in meshing.CARVE_VIEWS}, 64)
    axis = meshing.grid_axis(48, G.field.box_warp)
    xyz = meshing._node_xyz(torch.arange(48 ** 3), axis, 48)
    h = meshing.hull_alpha({k: r["alpha"] for k, r in renders.items()}, views, xyz)
    thr = float(torch.quantile(h, 1.0 - hull_fraction))
    inside = xyz[h > thr]
    sigma = G.sample_density(planes, inside[None].to(dev))[0, :, 0].double().cpu()
    level = float((1 - torch.exp(-sigma)).median())
    return thr, level


@cli_main
def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m _scripts.bench.infer", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", type=Path, help="generator snapshot (default: --preset with random init)")
    ap.add_argument("--preset", default="nova_body_small", help="training.triplane preset (random init)")
    ap.add_argument("--front", type=Path, help="front image (default: the real character's author render)")
    ap.add_argument("--back", type=Path, help="back image")
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda (default: auto)")
    ap.add_argument("--mesh-resolution", type=int, default=256, help="(default: 256)")
    ap.add_argument("--turntable", type=int, default=0, help="turntable frames (default: 0)")
    ap.add_argument("--texture", action="store_true", help="also bake the UV texture")
    ap.add_argument("--no-carve", dest="carve", action="store_false", help="density at every grid node")
    ap.add_argument("--hull-fraction", type=float, default=0.06,
                    help="random-init calibration: share of the grid inside the carve hull (default: 0.06)")
    ap.add_argument("--opacity-threshold", type=float,
                    help="instead of the calibration (random init) or of _scripts.infer's default (--ckpt)")
    ap.add_argument("--density-threshold", type=float,
                    help="instead of the calibration (random init) or of _scripts.infer's default (--ckpt)")
    ap.add_argument("--repeat", type=int, default=2, help="runs; the first is a warm-up when > 1 (default: 2)")
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    ap.add_argument("--json", type=Path, help="write the per-run stage times here")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    dev = R.resolve_device(a.device)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        front, back = (a.front, a.back) if a.front else default_images(tmp)
        if a.ckpt is None:
            from training.checkpoint import save_checkpoint
            from training.triplane import build_preset
            torch.manual_seed(0)
            try:
                G = build_preset(a.preset)
            except ValueError as e:
                raise UserError(f"--preset: {e}") from None
            a.ckpt = save_checkpoint(tmp / "G.pt", {"G_ema": G.eval()}, step=0, kimg=0.0)
        t = time.perf_counter()
        model = R.load_model(a.ckpt, device=dev)
        load_s = time.perf_counter() - t
        thr, level = a.opacity_threshold, a.density_threshold
        random_init = a.ckpt.parent == tmp
        if random_init and (thr is None or level is None):
            c_thr, c_level = calibrate(model, front, back, a.hull_fraction)
            thr = c_thr if thr is None else thr
            level = c_level if level is None else level
        # a trained model: the thresholds `python -m _scripts.infer` uses unless told otherwise
        user = infer_cli.parser()
        thr = user.get_default("opacity_threshold") if thr is None else thr
        level = user.get_default("density_threshold") if level is None else level
        print(f"bench.infer: {type(model.G).__name__} ({a.preset if random_init else a.ckpt}), "
              f"device {dev}, {torch.get_num_threads()} CPU threads, mesh {a.mesh_resolution}^3, "
              f"carve {a.carve}, opacity threshold {thr:.4g}, level {level:.4g}"
              f"{' (calibrated to the random field)' if random_init else ''}")
        runs = []
        for i in range(max(1, a.repeat)):
            if dev.type == "cuda":
                torch.cuda.synchronize()
            cpu0 = time.process_time()
            s = R.reconstruct(front, tmp / f"out{i}", back if model.two_view else None, model=model,
                              turntable=a.turntable, mesh_resolution=a.mesh_resolution, density_threshold=level,
                              opacity_threshold=thr, carve=a.carve, texture=a.texture)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            sec = dict(s["seconds"], load=load_s, process_cpu=time.process_time() - cpu0)
            sec["total"] = s["seconds"]["total"] + load_s      # the model is loaded once, outside reconstruct
            runs.append({"seconds": sec, "mesh": s["mesh"], "texture": s.get("texture")})
            print(f"run {i + 1}{' (warm-up)' if a.repeat > 1 and i == 0 else ''}: total {sec['total']:.2f} s "
                  f"(process CPU time {sec['process_cpu']:.1f} s), "
                  f"{s['mesh']['vertices']} vertices, hull {s['mesh']['hull_fraction']:.3f} of the grid")
    timed = runs[1:] if len(runs) > 1 else runs
    keys = list(timed[0]["seconds"])
    print(f"\n{'stage (median of the timed runs)':<34}{'seconds':>10}")
    for k in keys:
        print(f"{k:<34}{np.median([r['seconds'][k] for r in timed]):>10.3f}")
    if a.json:
        a.json.write_text(json.dumps({"device": str(dev), "threads": torch.get_num_threads(),
                                      "opacity_threshold": thr, "level": level, "runs": runs}, indent=1))
    return runs


if __name__ == "__main__":
    main()

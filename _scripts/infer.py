"""Reconstruct a 3D character from artwork: a front image (and a back image for two-view models).

Writes into --out: the prepared inputs, ortho renders (front/back/left/right), extra views, a turntable
(GIF, and MP4 when ffmpeg is available), the triplane (triplane.pt) and the mesh (mesh.glb: vertex
colours, or a UV texture with --texture; mesh.ply: vertex colours), summary.json last.  Without --ckpt
the default released model (_configs/release.toml) is used; --model picks another.  The pipeline is
training/infer/reconstruct.py (the web demo, python -m _scripts.app, runs the same code).
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from training.infer import reconstruct as R
from training.errors import UserError, cli_main

# kept importable from here for callers of the previous module layout
MISMATCH_WARN = R.MISMATCH_WARN
parse_views = R.parse_views
load_reconstructor = R.load_reconstructor
load_line_remover = R.load_line_remover


def reconstruct(front, ckpt, out, back=None, remove_lines=None, turntable: int = 24, views=(),
                mesh_resolution: int = 256, density_threshold: float = 0.5, device: str = "auto",
                fill: float = 0.75, keep_framing: bool = False, **kw) -> dict:
    """training.infer.reconstruct.reconstruct with the checkpoint as the second argument."""
    return R.reconstruct(front, out, back, ckpt=ckpt, remove_lines=remove_lines, turntable=turntable,
                         views=views, mesh_resolution=mesh_resolution, density_threshold=density_threshold,
                         device=device, fill=fill, keep_framing=keep_framing, **kw)


def parser() -> argparse.ArgumentParser:
    choices = R.released_choices()
    ap = argparse.ArgumentParser(prog="python -m _scripts.infer", description=__doc__,
                                 formatter_class=lambda prog: argparse.ArgumentDefaultsHelpFormatter(
                                     prog, max_help_position=36))
    ap.add_argument("--front", required=True, type=Path, help="front image (RGBA, or a plain background)")
    ap.add_argument("--back", type=Path, help="back image (two-view models)")
    ap.add_argument("--ckpt", type=Path, help="generator snapshot (network-snapshot-*.pt); default: the released "
                                              "model")
    ap.add_argument("--model", help="released model by name (_configs/release.toml): "
                                    + (", ".join(choices) if choices else "none listed yet"))
    ap.add_argument("--registry", type=Path, help="release registry file (default _configs/release.toml)")
    ap.add_argument("--out", required=True, type=Path, help="output folder")
    ap.add_argument("--remove-lines", type=Path, metavar="LINES_CKPT",
                    help="line-removal checkpoint (python -m _train.img2img.train) applied to the artwork first")
    ap.add_argument("--turntable", type=int, default=24, help="number of turntable frames (0: none)")
    ap.add_argument("--render-resolution", type=int, default=None,
                    help="neural rendering size of the views (default: the model's own on a GPU, at most "
                         f"{R.CPU_RENDER_RESOLUTION} on a CPU; images are written at the model's output size)")
    ap.add_argument("--views", help="extra perspective views 'elev,azim;elev,azim' in degrees")
    ap.add_argument("--mesh-resolution", type=int, default=256, help="marching-cubes grid (nodes per side)")
    ap.add_argument("--density-threshold", type=float, default=0.5, help="marching-cubes level on 1-exp(-density)")
    ap.add_argument("--mesh-step", type=float, default=None,
                    help="the level applies to 1-exp(-density*step), the opacity of a slab STEP metres thick "
                         "(default: the framing's, training.infer.meshing.MESH_STEP; 1: the published 1-exp(-density))")
    ap.add_argument("--opacity-threshold", type=float, default=0.5,
                    help="rendered alpha above which the carve views count a pixel as opaque")
    ap.add_argument("--no-carve", dest="carve", action="store_false",
                    help="mesh the whole density grid, not only what the renders show as opaque")
    ap.add_argument("--texture", action="store_true", help="mesh.glb with a UV atlas and a baked colour texture")
    ap.add_argument("--texture-size", type=int, default=1024, help="texture side in pixels")
    ap.add_argument("--texture-faces", type=int, default=20000, help="the textured mesh is simplified to this")
    ap.add_argument("--fill", type=float, default=0.75, help="body framing: silhouette height / image height")
    ap.add_argument("--keep-framing", action="store_true",
                    help="the images are already in the training framing (e.g. ortho renders): no crop/scale")
    ap.add_argument("--no-triplane", dest="save_triplane", action="store_false", help="do not write triplane.pt")
    ap.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:1, ...")
    ap.add_argument("--quiet", action="store_true", help="no progress lines")
    return ap


@cli_main
def main(argv=None):
    a = parser().parse_args(argv)
    if a.turntable < 0 or a.mesh_resolution < 2:
        raise UserError("--turntable must be >= 0 and --mesh-resolution >= 2")
    if a.mesh_step is not None and a.mesh_step <= 0:
        raise UserError(f"--mesh-step {a.mesh_step:g}: must be > 0 (metres)")
    if a.texture_size < 16 or a.texture_faces < 100:
        raise UserError("--texture-size must be >= 16 and --texture-faces >= 100")
    views = R.parse_views(a.views)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    model = R.load_model(a.ckpt, a.model, a.device, a.registry)
    s = R.reconstruct(a.front, a.out, a.back, model=model, remove_lines=a.remove_lines, turntable=a.turntable,
                      views=views, mesh_resolution=a.mesh_resolution,
                      density_threshold=a.density_threshold, mesh_step=a.mesh_step,
                      opacity_threshold=a.opacity_threshold, carve=a.carve, texture=a.texture, texture_size=a.texture_size,
                      texture_faces=a.texture_faces, fill=a.fill, keep_framing=a.keep_framing,
                      save_triplane=a.save_triplane, render_res=a.render_resolution,
                      progress=None if a.quiet else R.StageLog())
    print(json.dumps(s, indent=1))
    print(f"outputs in {a.out}")


if __name__ == "__main__":
    main()

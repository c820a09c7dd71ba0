"""Render throughput of the ground-truth rasteriser (views per second) on this machine.

    python -m _scripts.bench.render_throughput --size 512 --views 24 --framing body

Renders the real test models (and a procedural character when training.data.synth
is available) with one GL context; prints, per model, the one-off cost
(load + pose + frame, upload) and views/second for the render alone (RGBA +
xyza read back and downsampled) and with the two PNG encodings the render
script does per view.  Works on Mesa llvmpipe (CPU) and NVIDIA EGL (GPU).
"""
from __future__ import annotations

import argparse
import io
import os
import tempfile
import time
from pathlib import Path

from training import cameras
from training.data import raster, render
from training.errors import UserError, cli_main
from training.images import on_white

DEFAULT_MODELS = Path(os.environ.get("REAL_MODELS_DIR", Path(__file__).resolve().parents[3] / "shared" / "data" / "real_models"))


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m _scripts.bench.render_throughput", description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=512, help="output size (rendered at --supersample x)")
    p.add_argument("--supersample", type=int, default=2)
    p.add_argument("--views", type=int, default=24, help="views timed per model (perspective grid views)")
    p.add_argument("--framing", default="body", choices=["head", "body"])
    p.add_argument("--lines", action="store_true", help="also time contour lines")
    p.add_argument("--models", default=str(DEFAULT_MODELS),
                   help="folder holding godette/godette.vrm and rai_girl/model.obj (+ diffuse_map.png)")
    p.add_argument("--src", action="append", default=[], help="extra character file(s) to time (repeatable)")
    p.add_argument("--no-synth", action="store_true", help="skip the procedural character")
    return p.parse_args(argv)


def _models(a, tmp: Path) -> list[tuple[str, Path, dict]]:
    m = Path(a.models)
    out = []
    if (m / "godette" / "godette.vrm").exists():
        out.append(("godette", m / "godette" / "godette.vrm", {}))
    if (m / "rai_girl" / "model.obj").exists():
        out.append(("rai_girl", m / "rai_girl" / "model.obj", {"texture": str(m / "rai_girl" / "diffuse_map.png")}))
    if not a.no_synth:
        try:
            from training.data.synth import write_dataset
            write_dataset(tmp, 1, 0, source="bench", progress=False)
            out += [(f.stem, f, {}) for f in sorted((tmp / "raw" / "bench").rglob("*.glb"))]
        except ImportError as e:   # the generator's own dependencies may be absent on a bare GPU box
            print(f"(procedural character skipped: {e})")
    out += [(Path(s).stem, Path(s), {}) for s in a.src]
    if not out:
        raise UserError(f"{m}: no models found (give --models or --src)")
    return out


def bench_model(rast, path, opts, framing, n_views, lines) -> dict:
    from PIL import Image
    t0 = time.perf_counter()
    framed = render.prepare_character(path, framing, 60.0, opts)
    t1 = time.perf_counter()
    scene = rast.upload(framed.character)
    grid = cameras.view_set("rgb60", framing)
    views = [grid[i % len(grid)] for i in range(n_views)]
    scene.render(views[0], lines=lines)            # warm-up: shader compile, first texture use
    t2 = time.perf_counter()
    outs = [scene.render(v, lines=lines) for v in views]
    t3 = time.perf_counter()
    for o in outs:
        for img in (raster.to_uint8(on_white(o["rgba"])), raster.to_uint8(o["xyza"])):
            Image.fromarray(img).save(io.BytesIO(), format="PNG")
    t4 = time.perf_counter()
    scene.release()
    return {"faces": framed.character.num_faces(), "prepare_s": t1 - t0, "upload_s": t2 - t1,
            "render_vps": n_views / (t3 - t2), "with_png_vps": n_views / (t4 - t2)}


@cli_main
def main(argv=None):
    a = parse_args(argv)
    if a.views < 1 or a.size < 8:
        raise UserError("--views must be >= 1 and --size >= 8")
    t0 = time.perf_counter()
    rast = raster.Rasteriser(a.size, a.supersample)
    t_ctx = time.perf_counter() - t0
    print(f"renderer: {raster.gl_renderer_name()} | GL context + shaders {t_ctx:.2f} s | "
          f"size {a.size} (x{a.supersample} supersampled), framing {a.framing}, {a.views} views"
          + (", contour lines" if a.lines else ""))
    print(f"{'model':<22}{'faces':>8}{'load+pose+frame s':>19}{'upload s':>10}{'views/s':>9}{'+png views/s':>14}")
    with tempfile.TemporaryDirectory() as tmp:
        for name, path, opts in _models(a, Path(tmp)):
            r = bench_model(rast, path, opts, a.framing, a.views, a.lines)
            print(f"{name:<22}{r['faces']:>8}{r['prepare_s']:>19.3f}{r['upload_s']:>10.3f}"
                  f"{r['render_vps']:>9.1f}{r['with_png_vps']:>14.1f}")


if __name__ == "__main__":
    main()

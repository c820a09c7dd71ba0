"""Reconstruct a 3D character from artwork: a front image (and a back image for two-view models).

    python -m _scripts.infer --front FRONT.png [--back BACK.png] --ckpt CKPT --out DIR
        [--remove-lines LINES.pt] [--turntable 24] [--views "20,45;0,135"]
        [--mesh-resolution 256] [--density-threshold 0.5] [--device auto]

Writes into DIR: the prepared inputs, ortho renders (front/back/left/right),
extra views, a turntable (GIF, and MP4 when ffmpeg is available), the triplane
(triplane.pt) and the mesh (mesh.glb with vertex colours, mesh.ply).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import torch

from PIL import Image

from training import artwork, cameras, inference
from _train.img2img.model import LineRemovalUNet
from training.checkpoint import load_checkpoint, load_generator
from training.errors import UserError, atomic_path, cli_main, fail, save_json_atomic, save_png_atomic
from training.images import to_uint8

log = logging.getLogger("infer")
GENERATOR_CLASSES = ("TriPlaneGenerator", "TriPlaneGenerator_v0", "TriPlaneGenerator_v1")
MISMATCH_WARN = 0.35   # 1 - IoU of front vs mirrored back silhouettes above which the views look inconsistent


def parse_views(text: str | None) -> list[tuple[float, float]]:
    if not text:
        return []
    try:
        return [tuple(float(x) for x in item.split(",")) for item in text.split(";") if item.strip()]
    except ValueError:
        raise UserError(f"--views: expected 'elev,azim;elev,azim...', got {text!r}") from None



def load_reconstructor(path, device):
    """The generator of a training snapshot (G_ema), with a clear error for other kinds of checkpoint."""
    ckpt = load_checkpoint(path)
    mods = ckpt["modules"]
    if "G_ema" not in mods:
        if "line_removal" in mods:
            raise fail(path, "is a line-removal checkpoint: give it with --remove-lines; --ckpt takes a "
                             "generator snapshot (network-snapshot-*.pt)")
        raise fail(path, f"holds no generator (G_ema); it has {sorted(mods)}")
    cls = str(mods["G_ema"].get("class")).rpartition(".")[2]
    if cls not in GENERATOR_CLASSES:
        raise fail(path, f"G_ema is a {cls}, not a triplane generator ({', '.join(GENERATOR_CLASSES)})")
    return load_generator(path, device=device)


def load_line_remover(path, device):
    """(network, resolution it was trained at) from a checkpoint of _train.img2img.train."""
    ckpt = load_checkpoint(path)
    if "line_removal" not in ckpt["modules"]:
        raise fail(path, "not a line-removal checkpoint (train one with `python -m _train.img2img.train`)")
    entry = ckpt["modules"]["line_removal"]
    # built here, not by checkpoint.build_module: that one only imports classes under training.
    if str(entry.get("class")).rpartition(".")[2] != LineRemovalUNet.__name__ or not entry.get("config"):
        raise fail(path, f"line_removal is a {entry.get('class')}, not a LineRemovalUNet")
    try:
        net = LineRemovalUNet(**entry["config"])
        net.load_state_dict(entry["state_dict"])
    except (TypeError, RuntimeError) as e:
        raise fail(path, f"line-removal weights do not fit ({str(e).splitlines()[0]})") from None
    net = net.to(device).eval()
    return net, int(ckpt.get("training_config", {}).get("resolution") or 256)


@torch.no_grad()
def clean_lines(net, rgba: np.ndarray, resolution: int, device) -> np.ndarray:
    """Run the line remover at the resolution it was trained at; keep the artwork's alpha."""
    img, _ = artwork.to_tensor(rgba, resolution)
    out = to_uint8(net(img[None].to(device))[0])
    clean = np.asarray(Image.fromarray(out).resize(rgba.shape[1::-1], Image.BICUBIC))
    return np.concatenate([clean, rgba[..., 3:]], -1)


@torch.no_grad()
def render_views(G, planes, views: list[cameras.View], device, batch: int = 8) -> list[np.ndarray]:
    out = []
    for i in range(0, len(views), batch):
        cam = cameras.as_tensor(views[i:i + batch], device)
        p = planes if len(views[i:i + batch]) == 1 else _expand(planes, cam.shape[0])
        img = G.render(p, cam)["image"]
        out += [to_uint8(x) for x in img]
    return out


def _expand(planes, n):
    """Repeat a batch-1 plane structure (tensor, or dict/tuple of tensors) n times."""
    if torch.is_tensor(planes):
        return planes.expand(n, *planes.shape[1:])
    if isinstance(planes, dict):
        return {k: _expand(v, n) for k, v in planes.items()}
    if isinstance(planes, (list, tuple)):
        return type(planes)(_expand(v, n) for v in planes)
    return planes


def write_turntable(frames: list[np.ndarray], out: Path, fps: int = 12) -> list[str]:
    import imageio.v2 as imageio
    written = []
    with atomic_path(out / "turntable.gif") as tmp:
        imageio.mimsave(tmp, frames, format="GIF", duration=1.0 / fps, loop=0)
    written.append("turntable.gif")
    try:
        import imageio_ffmpeg  # noqa: F401  (ships its own ffmpeg binary)
        with atomic_path(out / "turntable.mp4") as tmp:
            imageio.mimsave(tmp, frames, format="FFMPEG", fps=fps, codec="libx264", macro_block_size=1)
        written.append("turntable.mp4")
    except Exception as e:   # no encoder here: the GIF is enough
        log.warning("no MP4 written (%s)", e)
    return written


def reconstruct(front, ckpt, out, back=None, remove_lines=None, turntable: int = 24, views=(),
                mesh_resolution: int = 256, density_threshold: float = 0.5, device: str = "auto",
                fill: float = 0.75, keep_framing: bool = False) -> dict:
    """Everything `python -m _scripts.infer` writes; returns the summary (also written as summary.json)."""
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
    out = Path(out)
    G = load_reconstructor(ckpt, device)
    two_view = G.two_view
    if two_view and back is None:
        raise fail(ckpt, f"{type(G).__name__} is a two-view model: give the back image with --back")
    if not two_view and back is not None:
        log.warning("%s is a single-view model: the back image is ignored", type(G).__name__)
        back = None
    framing = G.framing   # every generator records the framing it was trained in
    res = int(G.cond_resolution)
    summary = {"checkpoint": str(ckpt), "generator": type(G).__name__, "framing": framing,
               "kimg": G.checkpoint_info["kimg"], "device": str(device), "outputs": []}
    prep = (lambda p: artwork.prepare_as_is(p, 512)) if keep_framing else \
        (lambda p: artwork.prepare(p, framing, 512, fill=fill))
    prepared = {"front": prep(front)}
    if back is not None:
        prepared["back"] = prep(back)
        mismatch = artwork.silhouette_mismatch(prepared["front"].rgba, prepared["back"].rgba)
        summary["silhouette_mismatch"] = round(float(mismatch), 4)
        if mismatch > MISMATCH_WARN:
            log.warning("the back image's silhouette does not match the mirrored front (1-IoU = %.2f): "
                        "is it really the back view, at the same scale?", mismatch)
    summary["matte"] = {k: v.matte_source for k, v in prepared.items()}
    cond = {}
    if remove_lines:
        net, lres = load_line_remover(remove_lines, device)
        prepared = {k: dataclasses.replace(v, rgba=clean_lines(net, v.rgba, lres, device))
                    for k, v in prepared.items()}
        summary["line_removal"] = str(remove_lines)
    for name, pv in prepared.items():
        img, mask = artwork.to_tensor(pv.rgba, res)
        img, mask = img[None].to(device), mask[None].to(device)
        cond[name], cond[f"{name}_mask"] = img, mask
        save_png_atomic(out / f"input_{name}.png", to_uint8(img[0]))
        summary["outputs"].append(f"input_{name}.png")

    with torch.no_grad():
        planes = G.synthesize(cond)
    with atomic_path(out / "triplane.pt") as tmp:
        torch.save(_to_cpu(planes), tmp)
    summary["outputs"].append("triplane.pt")

    fr = cameras.get_framing(framing)
    ortho = [v for v in cameras.view_set("ortho", fr) if v.name != "top"]
    for v, img in zip(ortho, render_views(G, planes, ortho, device)):
        save_png_atomic(out / f"ortho_{v.name}.png", img)
        summary["outputs"].append(f"ortho_{v.name}.png")
    extra = [cameras.make_view(f"view_e{e:g}_a{a:g}", e, a, fr, ortho=False) for e, a in views]
    for v, img in zip(extra, render_views(G, planes, extra, device)):
        save_png_atomic(out / f"{v.name}.png", img)
        summary["outputs"].append(f"{v.name}.png")
    if turntable > 0:
        frames = render_views(G, planes, cameras.orbit_views(turntable, fr, elev=10.0), device)
        summary["outputs"] += write_turntable(frames, out)
        summary["turntable_frames"] = len(frames)

    mesh = inference.extract_mesh(G, planes, resolution=mesh_resolution, level=density_threshold)
    if len(mesh.faces) == 0:
        log.warning("the density field has no surface at level %g: mesh is empty", density_threshold)
    for ext in ("glb", "ply"):
        with atomic_path(out / f"mesh.{ext}") as tmp:
            mesh.export(tmp, file_type=ext)
        summary["outputs"].append(f"mesh.{ext}")
    summary["mesh"] = {"vertices": int(len(mesh.vertices)), "faces": int(len(mesh.faces)),
                       "resolution": mesh_resolution, "level": density_threshold}
    save_json_atomic(out / "summary.json", summary)
    return summary


def _to_cpu(planes):
    if torch.is_tensor(planes):
        return planes.detach().cpu()
    if isinstance(planes, dict):
        return {k: _to_cpu(v) for k, v in planes.items()}
    if isinstance(planes, (list, tuple)):
        return type(planes)(_to_cpu(v) for v in planes)
    return planes


@cli_main
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--front", required=True, type=Path, help="front image (RGBA, or a plain background)")
    ap.add_argument("--back", type=Path, help="back image (two-view checkpoints)")
    ap.add_argument("--ckpt", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--remove-lines", type=Path, metavar="LINES_CKPT",
                    help="line-removal checkpoint (python -m _train.img2img.train) applied to the artwork first")
    ap.add_argument("--turntable", type=int, default=24, help="number of turntable frames (0: none)")
    ap.add_argument("--views", help="extra perspective views 'elev,azim;elev,azim' in degrees")
    ap.add_argument("--mesh-resolution", type=int, default=256)
    ap.add_argument("--density-threshold", type=float, default=0.5, help="marching-cubes level on 1-exp(-density)")
    ap.add_argument("--fill", type=float, default=0.75, help="body framing: silhouette height / image height")
    ap.add_argument("--keep-framing", action="store_true",
                    help="the images are already in the training framing (e.g. ortho renders): no crop/scale")
    ap.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:1, ...")
    a = ap.parse_args(argv)
    if a.turntable < 0 or a.mesh_resolution < 2:
        raise UserError("--turntable must be >= 0 and --mesh-resolution >= 2")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    s = reconstruct(a.front, a.ckpt, a.out, a.back, a.remove_lines, a.turntable, parse_views(a.views),
                    a.mesh_resolution, a.density_threshold, a.device, a.fill, a.keep_framing)
    print(json.dumps(s, indent=1))
    print(f"outputs in {a.out}")


if __name__ == "__main__":
    main()

"""Artwork -> 3D character: the one reconstruction pipeline (``python -m _scripts.infer`` and the web demo).

    model = load_model(ckpt=None or PATH, model=None or NAME)     # released models by name (training.infer.release)
    summary = reconstruct(front, out_dir, back=..., model=model, progress=callback)

Stages: prepare the artwork (matte, framing, optional line removal), encode + synthesise the triplane,
render the ortho views, extra views and a turntable, extract the mesh (carved by the renders, coloured
from them), optionally bake a UV texture, write everything atomically and summary.json last.  Each
stage's wall time is in ``summary["seconds"]``; ``progress(fraction, message)`` is called as it goes.
"""
from __future__ import annotations

import dataclasses
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from training import cameras
from training.infer import artwork, meshing
from training.checkpoint import load_checkpoint, load_generator
from training.errors import UserError, atomic_path, fail, save_json_atomic, save_png_atomic
from training.images import to_uint8

log = logging.getLogger("reconstruct")
GENERATOR_CLASSES = ("TriPlaneGenerator", "TriPlaneGenerator_v0", "TriPlaneGenerator_v1")
MISMATCH_WARN = 0.35   # 1 - IoU of front vs mirrored back silhouettes above which the views look inconsistent
# share of the whole job each stage takes (progress bars), measured on the CPU for a release-size model
STAGE_WEIGHTS = {"load": 0.03, "prepare": 0.02, "encode": 0.02, "ortho": 0.08, "views": 0.04,
                 "turntable": 0.33, "mesh": 0.33, "texture": 0.12, "write": 0.03}


# ---------------------------------------------------------------- device and model

def resolve_device(name: str = "auto") -> torch.device:
    """'auto' (CUDA when available), 'cpu', 'cuda', 'cuda:N'; a GPU that is not there is a one-line error."""
    name = str(name or "auto")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise UserError(f"--device: {name!r} is not a device (auto, cpu, cuda, cuda:1, ...)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {name}: no CUDA GPU is usable here (torch.cuda.is_available() is "
                            "False); use --device cpu (or auto)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UserError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type != "cpu":
        raise UserError(f"--device {name}: only cpu and cuda devices are supported")
    return dev


@dataclasses.dataclass
class Model:
    """A loaded reconstructor and where it came from."""
    G: torch.nn.Module
    path: Path
    name: str              # registry name, or the checkpoint's file name
    device: torch.device

    @property
    def two_view(self) -> bool:
        return bool(self.G.two_view)


def resolve_checkpoint(ckpt=None, model: str | None = None, registry=None, runs=None) -> tuple[Path, str]:
    """(checkpoint path, display name): ``ckpt`` as given, else the released model ``model`` (None: the
    default one) from the registry (``_configs/release.toml``), checked against its sha256."""
    from training.infer import release
    if ckpt is not None:
        if model is not None:
            raise UserError("give either --model NAME (a released model) or --ckpt PATH, not both")
        return Path(ckpt), Path(ckpt).name
    reg_path = Path(registry) if registry is not None else release.REGISTRY
    if not reg_path.is_file():
        raise fail(reg_path, "release registry not found: give a generator snapshot with --ckpt PATH")
    reg = release.load_registry(reg_path)
    if not reg:
        raise fail(reg_path, "no released models are listed yet: give a generator snapshot with --ckpt PATH "
                             "(e.g. _train/eg3dc/runs/<run>/<NNNNN>/network-snapshot-<kimg>.pt)")
    m, path = release.released_checkpoint(model, reg_path, runs)
    return path, m.name


def released_choices(registry=None) -> list[str]:
    """Names of the released models (empty when the registry is missing or lists none)."""
    from training.infer import release
    try:
        return list(release.load_registry(registry))
    except UserError:
        return []


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
    # the encoders log their construction ("random init"): the weights come from the checkpoint right after
    enc_log = logging.getLogger("training.encoders")
    level = enc_log.level
    enc_log.setLevel(logging.WARNING)
    try:
        return load_generator(path, device=device, ckpt=ckpt)
    finally:
        enc_log.setLevel(level)


def load_model(ckpt=None, model: str | None = None, device="auto", registry=None, runs=None) -> Model:
    dev = resolve_device(device) if not isinstance(device, torch.device) else device
    path, name = resolve_checkpoint(ckpt, model, registry, runs)
    return Model(load_reconstructor(path, dev), path, name, dev)


def load_line_remover(path, device):
    """(network, resolution it was trained at) from a checkpoint of _train.img2img.train."""
    from _train.img2img.model import LineRemovalUNet
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


# ---------------------------------------------------------------- rendering helpers

def parse_views(text: str | None) -> list[tuple[float, float]]:
    if not text:
        return []
    try:
        views = [tuple(float(x) for x in item.split(",")) for item in text.split(";") if item.strip()]
    except ValueError:
        views = None
    if views is None or any(len(v) != 2 for v in views):
        raise UserError(f"--views: expected 'elev,azim;elev,azim...', got {text!r}")
    return views


CPU_RENDER_RESOLUTION = 96    # the default neural rendering size on a CPU (a 256-px view of nova_v1: 34 s on 2 cores)


def render_resolution(G, device, requested: int | None = None) -> int:
    """The neural rendering size of the renders: ``requested``, else the model's own on a GPU and at most
    CPU_RENDER_RESOLUTION on a CPU (the cost grows with its square; images are still written at the
    model's output size)."""
    if requested:
        if requested < 8:
            raise UserError(f"--render-resolution: {requested} is too small (at least 8)")
        return int(requested)
    own = int(G.neural_rendering_resolution)
    return own if torch.device(device).type == "cuda" else min(own, CPU_RENDER_RESOLUTION)


@torch.no_grad()
def render_views(G, planes, views: list, device, batch: int = 8, keep: dict | None = None,
                 on_batch=None, resolution: int | None = None) -> list[np.ndarray]:
    """Super-resolved renders (uint8 HWC) of views; ``keep``: filled with {view name: {"alpha", "rgb",
    "depth"}} for the mesh's colours; ``on_batch(done, total)`` after each batch."""
    out = []
    for i in range(0, len(views), batch):
        vs = views[i:i + batch]
        cam = cameras.as_tensor(vs, device)
        r = G.render(meshing._expand(planes, len(vs)), cam, resolution)
        out += [to_uint8(x) for x in r["image"]]
        if keep is not None:
            for j, v in enumerate(vs):
                keep[v.name] = {"alpha": r["image_alpha"][j, 0], "depth": r["image_depth"][j, 0],
                                "rgb": ((r["image"][j].float() + 1) / 2).clamp(0, 1)}
        if on_batch is not None:
            on_batch(len(out), len(views))
    return out


def write_turntable(frames: list[np.ndarray], out: Path, fps: int = 12) -> tuple[list[str], list[str]]:
    """turntable.gif and, when imageio-ffmpeg's encoder works, turntable.mp4; (files, warnings)."""
    import imageio.v2 as imageio
    written, warnings = [], []
    with atomic_path(out / "turntable.gif") as tmp:
        imageio.mimsave(tmp, frames, format="GIF", duration=1.0 / fps, loop=0)
    written.append("turntable.gif")
    try:
        import imageio_ffmpeg  # noqa: F401  (ships its own ffmpeg binary)
        with atomic_path(out / "turntable.mp4") as tmp:
            imageio.mimsave(tmp, frames, format="FFMPEG", fps=fps, codec="libx264", macro_block_size=1,
                            pixelformat="yuv420p")
        written.append("turntable.mp4")
    except Exception as e:   # noqa: BLE001 - no encoder here: the GIF is enough
        warnings.append(f"no MP4 turntable written ({e})")
    return written, warnings


def _to_cpu(planes):
    if torch.is_tensor(planes):
        return planes.detach().cpu()
    if isinstance(planes, dict):
        return {k: _to_cpu(v) for k, v in planes.items()}
    if isinstance(planes, (list, tuple)):
        return type(planes)(_to_cpu(v) for v in planes)
    return planes


# ---------------------------------------------------------------- progress

class StageLog:
    """Default progress: one line per stage on stderr, with the elapsed time."""

    def __init__(self, stream=None):
        self.stream, self.t0, self.last = stream or sys.stderr, time.perf_counter(), None

    def __call__(self, fraction: float, message: str):
        if message != self.last:
            print(f"[{time.perf_counter() - self.t0:6.1f} s] {message}", file=self.stream, flush=True)
            self.last = message


class _Progress:
    def __init__(self, callback, stages):
        self.cb = callback
        w = {s: STAGE_WEIGHTS[s] for s in stages}
        total = sum(w.values()) or 1.0
        self.start, acc = {}, 0.0
        for s in stages:
            self.start[s] = acc / total
            acc += w[s]
        self.weight = {s: w[s] / total for s in stages}

    def __call__(self, stage: str, message: str, done: float = 0.0):
        if self.cb is not None:
            self.cb(min(1.0, self.start[stage] + self.weight[stage] * done), message)


# ---------------------------------------------------------------- the pipeline

def reconstruct(front, out, back=None, *, model: Model | None = None, ckpt=None, model_name: str | None = None,
                remove_lines=None, turntable: int = 24, views=(), mesh_resolution: int = 256,
                density_threshold: float = 0.5, mesh_step: float | None = None, opacity_threshold: float = 0.5,
                carve: bool = True, texture: bool = False, texture_size: int = 1024, texture_faces: int = 20000,
                device="auto", fill: float = 0.75, keep_framing: bool = False, save_triplane: bool = True,
                progress=None, registry=None, render_res: int | None = None) -> dict:
    """Everything ``python -m _scripts.infer`` writes into ``out``; returns the summary (also summary.json,
    written last).  ``model``: a loaded Model (else loaded from ``ckpt`` / the released ``model_name``).
    ``remove_lines``: a line-removal checkpoint path or a loaded (net, resolution) pair.  ``render_res``:
    the neural rendering size (render_resolution: the model's own on a GPU, at most 128 on a CPU).  ``progress``:
    ``callable(fraction, message)``; warnings are logged and listed in ``summary["warnings"]``."""
    t_all = time.perf_counter()
    seconds, warnings = {}, []

    def warn(msg):
        log.warning("%s", msg)
        warnings.append(msg)

    stages = ["load", "prepare", "encode", "ortho"] + (["views"] if views else []) + \
        (["turntable"] if turntable > 0 else []) + ["mesh"] + (["texture"] if texture else []) + ["write"]
    prog = _Progress(progress, stages)
    out = Path(out)
    if front is None:
        raise UserError("no front image given")

    t = time.perf_counter()
    prog("load", "loading the model")
    if model is None:
        model = load_model(ckpt, model_name, device, registry)
    G, dev = model.G, model.device
    if G.two_view and back is None:
        raise fail(model.path, f"{type(G).__name__} is a two-view model: give the back image with --back")
    if not G.two_view and back is not None:
        warn(f"{type(G).__name__} is a single-view model: the back image is ignored")
        back = None
    line_net = None
    if remove_lines is not None:
        line_net = remove_lines if isinstance(remove_lines, tuple) else load_line_remover(remove_lines, dev)
    seconds["load"] = time.perf_counter() - t
    framing, res = G.framing, int(G.cond_resolution)
    nr = render_resolution(G, dev, render_res)
    summary = {"checkpoint": str(model.path), "model": model.name, "generator": type(G).__name__,
               "framing": framing, "kimg": G.checkpoint_info["kimg"], "device": str(dev),
               "render_resolution": nr, "outputs": []}

    t = time.perf_counter()
    prog("prepare", "preparing the artwork")
    prep = (lambda p: artwork.prepare_as_is(p, 512)) if keep_framing else \
        (lambda p: artwork.prepare(p, framing, 512, fill=fill))
    prepared = {"front": prep(front)}
    if back is not None:
        prepared["back"] = prep(back)
        mismatch = artwork.silhouette_mismatch(prepared["front"].rgba, prepared["back"].rgba)
        summary["silhouette_mismatch"] = round(float(mismatch), 4)
        if mismatch > MISMATCH_WARN:
            warn(f"the back image's silhouette does not match the mirrored front (1-IoU = {mismatch:.2f}): "
                 "is it really the back view, at the same scale?")
    summary["matte"] = {k: v.matte_source for k, v in prepared.items()}
    if line_net is not None:
        prog("prepare", "removing contour lines")
        net, lres = line_net
        prepared = {k: dataclasses.replace(v, rgba=clean_lines(net, v.rgba, lres, dev)) for k, v in prepared.items()}
        summary["line_removal"] = str(remove_lines if not isinstance(remove_lines, tuple) else "loaded")
    cond = {}
    for name, pv in prepared.items():
        img, mask = artwork.to_tensor(pv.rgba, res)
        img, mask = img[None].to(dev), mask[None].to(dev)
        cond[name], cond[f"{name}_mask"] = img, mask
        save_png_atomic(out / f"input_{name}.png", to_uint8(img[0]))
        summary["outputs"].append(f"input_{name}.png")
    seconds["prepare"] = time.perf_counter() - t

    t = time.perf_counter()
    prog("encode", "encoding the artwork into a triplane")
    with torch.no_grad():
        planes = G.synthesize(cond)
    if save_triplane:
        with atomic_path(out / "triplane.pt") as tmp:
            torch.save(_to_cpu(planes), tmp)
        summary["outputs"].append("triplane.pt")
    seconds["encode"] = time.perf_counter() - t

    t = time.perf_counter()
    fr = cameras.get_framing(framing)
    prog("ortho", "rendering the ortho views")
    ortho = [v for v in cameras.view_set("ortho", fr) if v.name != "top"]
    renders = {}          # the ortho renders also colour the mesh
    for v, img in zip(ortho, render_views(G, planes, ortho, dev, keep=renders, resolution=nr)):
        save_png_atomic(out / f"ortho_{v.name}.png", img)
        summary["outputs"].append(f"ortho_{v.name}.png")
    seconds["ortho"] = time.perf_counter() - t
    if views:
        t = time.perf_counter()
        prog("views", f"rendering {len(views)} extra view(s)")
        extra = [cameras.make_view(f"view_e{e:g}_a{a:g}", e, a, fr, ortho=False) for e, a in views]
        for v, img in zip(extra, render_views(G, planes, extra, dev, resolution=nr)):
            save_png_atomic(out / f"{v.name}.png", img)
            summary["outputs"].append(f"{v.name}.png")
        seconds["views"] = time.perf_counter() - t
    if turntable > 0:
        t = time.perf_counter()
        prog("turntable", f"turntable: 0/{turntable} frames")
        frames = render_views(G, planes, cameras.orbit_views(turntable, fr, elev=10.0), dev, resolution=nr,
                              on_batch=lambda d, n: prog("turntable", f"turntable: {d}/{n} frames", d / n))
        written, w = write_turntable(frames, out)
        for x in w:
            warn(x)
        summary["outputs"] += written
        summary["turntable_frames"] = len(frames)
        seconds["turntable"] = time.perf_counter() - t

    t = time.perf_counter()
    prog("mesh", f"extracting the mesh ({mesh_resolution}^3 grid)")
    rep = meshing.MeshReport(mesh_resolution, density_threshold, carve, opacity_threshold)
    mesh = meshing.extract_mesh(G, planes, resolution=mesh_resolution, level=density_threshold, step=mesh_step,
                                  carve=carve, opacity_threshold=opacity_threshold, renders=renders, report=rep)
    warnings += rep.warnings         # extract_mesh logged them
    seconds["mesh"] = time.perf_counter() - t
    for k, v in rep.seconds.items():
        seconds[f"mesh_{k}"] = v
    glb_mesh = mesh
    summary["mesh"] = {"vertices": int(len(mesh.vertices)), "faces": int(len(mesh.faces)),
                       "resolution": mesh_resolution, "level": density_threshold, **{
                           k: v for k, v in rep.to_json().items()
                           if k not in ("resolution", "level", "vertices", "faces", "warnings", "seconds")}}
    if texture:
        t = time.perf_counter()
        prog("texture", "baking the UV texture")
        if len(mesh.faces) == 0:
            warn("no texture baked: the mesh is empty")
        else:
            from training.infer import texture as tex
            try:
                sec = {}
                glb_mesh = tex.bake_textured_mesh(G, planes, mesh, size=texture_size, max_faces=texture_faces,
                                                  renders=renders, seconds=sec)
                for k, v in sec.items():
                    seconds[f"texture_{k}"] = v
                summary["texture"] = {"size": texture_size, "vertices": int(len(glb_mesh.vertices)),
                                      "faces": int(len(glb_mesh.faces)),
                                      "coverage": round(glb_mesh.metadata.get("texture_coverage", 0.0), 4)}
            except ImportError as e:
                warn(f"no texture baked ({e}); mesh.glb keeps the vertex colours")
        seconds["texture"] = time.perf_counter() - t

    t = time.perf_counter()
    prog("write", "writing the mesh files")
    for ext, m in (("glb", glb_mesh), ("ply", mesh)):
        with atomic_path(out / f"mesh.{ext}") as tmp:
            m.export(tmp, file_type=ext)
        summary["outputs"].append(f"mesh.{ext}")
    seconds["write"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - t_all
    summary["seconds"] = {k: round(v, 3) for k, v in seconds.items()}
    summary["warnings"] = warnings
    save_json_atomic(out / "summary.json", summary)
    if progress is not None:
        progress(1.0, f"done in {seconds['total']:.1f} s")
    return summary


__all__ = ["resolve_device", "resolve_checkpoint", "released_choices", "load_model", "load_reconstructor",
           "load_line_remover", "clean_lines", "parse_views", "render_views", "write_turntable", "reconstruct",
           "Model", "StageLog", "MISMATCH_WARN"]

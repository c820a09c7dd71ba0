"""Web demo: reconstruct a 3D character from your artwork in the browser (Gradio, on localhost).

    python -m _scripts.app                          # the released models (_configs/release.toml)
    python -m _scripts.app --ckpt CKPT [--ckpt CKPT2] [--remove-lines LINES.pt] [--port 7860] [--device cuda]

Upload a front image (and a back image for a two-view model), pick the model, optional line removal
and the mesh resolution: the page shows the prepared inputs, the ortho renders, a turntable video and
the mesh in a 3D viewer, with the GLB (UV-textured or vertex-coloured) and PLY to download.  Every
reconstruction runs training.infer.reconstruct.reconstruct, the pipeline of python -m _scripts.infer.
"""
from __future__ import annotations

import argparse
import csv
import logging
import os
import shutil
import tempfile
import threading
import time
import traceback
from pathlib import Path

from training import paths
from training.infer import reconstruct as R
from training.errors import UserError, cli_main

log = logging.getLogger("app")
REPO = Path(__file__).resolve().parent.parent
REAL = REPO.parent / "shared" / "data" / "real_models"
MESH_RESOLUTIONS = (96, 128, 192, 256)


# ---------------------------------------------------------------- models and examples

class Models:
    """Choices (released names and --ckpt files) -> loaded models, loaded on first use and kept."""

    def __init__(self, ckpts=(), registry=None, device="auto", default: str | None = None):
        self.device = R.resolve_device(device)
        self.registry = registry
        self.paths: dict[str, Path | None] = {}
        for name in R.released_choices(registry):
            self.paths[name] = None                       # resolved (and checked) by the registry
        for c in ckpts:
            c = Path(c)
            if not c.is_file():
                raise UserError(f"{c}: checkpoint file not found")
            label = c.name if c.name not in self.paths else str(c)
            self.paths[label] = c
        if not self.paths:
            reg = registry or "_configs/release.toml"
            raise UserError(f"{reg}: no released models are listed yet: start the demo with --ckpt PATH "
                            "(a generator snapshot, network-snapshot-*.pt)")
        if default is not None and default not in self.paths:
            raise UserError(f"--model: {default!r} is not a choice ({', '.join(self.paths)})")
        self.default = default or self._registry_default() or next(iter(self.paths))
        self._loaded: dict[str, R.Model] = {}
        self._lock = threading.Lock()

    def _registry_default(self):
        from training.infer import release
        try:
            reg = release.load_registry(self.registry)
            return release.default_model(reg).name if reg else None
        except UserError:
            return None

    def get(self, name: str) -> R.Model:
        with self._lock:
            if name not in self.paths:
                raise UserError(f"unknown model {name!r}")
            if name not in self._loaded:
                p = self.paths[name]
                m = R.load_model(ckpt=p, model=None if p else name, device=self.device, registry=self.registry)
                self._loaded[name] = m if p is None else R.Model(m.G, m.path, name, m.device)
            return self._loaded[name]


def render_real_character(path: Path, out: Path) -> tuple[Path, Path] | None:
    """Front and back ortho renders (body framing, arms lowered) of a real character file, by the
    project's rasteriser, cached in ``out``; None when it cannot be rendered here (no OpenGL, ...)."""
    f, b = out / f"{path.stem}_front.png", out / f"{path.stem}_back.png"
    if f.is_file() and b.is_file():
        return f, b
    try:
        import numpy as np
        from training import cameras
        from training.data import raster, render
        from training.errors import save_png_atomic
        ch = render.prepare_character(path, "body", 60.0).character
        views = {v.name: v for v in cameras.view_set("ortho", "body")}
        for p, name in ((f, "front"), (b, "back")):
            rgba = raster.render_views(ch, [views[name]], size=512)[0]["rgba"]
            save_png_atomic(p, (np.clip(rgba, 0, 1) * 255 + 0.5).astype(np.uint8))
        return f, b
    except Exception as e:  # noqa: BLE001 - an example less, not a broken demo
        log.warning("no example renders of %s (%s)", path, e)
        return None


def find_examples(limit: int = 3, cache: Path | None = None) -> list[list]:
    """[front, back, keep_framing] rows: the real characters (the author's renders of rai_girl; Godette
    rendered here by the project's rasteriser into ``cache``), then held-out synthetic characters' ortho
    renders (test splits of the data roots that have them, in the training framing)."""
    rows = []
    f, b = REAL / "rai_girl" / "author_render_front.png", REAL / "rai_girl" / "author_render_back.png"
    if f.is_file() and b.is_file():
        if cache is not None:       # served from the demo's own folder (the app serves no other paths)
            cache.mkdir(parents=True, exist_ok=True)
            f, b = [Path(shutil.copy(p, cache / f"rai_girl_{p.name}")) for p in (f, b)]
        rows.append([str(f), str(b), False])
    vrm = REAL / "godette" / "godette.vrm"
    if cache is not None and vrm.is_file():
        got = render_real_character(vrm, cache)
        if got:
            rows.append([str(got[0]), str(got[1]), True])
    roots = dict.fromkeys([paths.data_root(), paths.project_dir() / "_data" / "quickstart"])
    for root in roots:
        for split in sorted((root / "subsets").glob("*_test.csv")) if (root / "subsets").is_dir() else []:
            renderset = split.name[:-len("_test.csv")]
            try:
                ids = [r[0] for r in csv.reader(split.open()) if r]
            except OSError:
                continue
            n = 0
            for cid in ids:
                d = root / "renders" / renderset / "ortho" / cid
                if (d / "front.png").is_file() and (d / "back.png").is_file():
                    rows.append([str(d / "front.png"), str(d / "back.png"), True])
                    n += 1
                if n >= limit:
                    break
    return rows


# ---------------------------------------------------------------- one reconstruction

def describe(m: R.Model) -> str:
    kind = "two views (front + back)" if m.two_view else "one view (front; a back image is ignored)"
    return f"**{m.name}**: `{type(m.G).__name__}`, {m.G.framing} framing, {kind}, on {m.device}"


def run_job(models: Models, work: Path, lines, front, back, model_name, remove_lines: bool, mesh_res,
            turntable: int, texture: bool, keep_framing: bool, progress=None) -> dict:
    """Reconstruct into a fresh folder under ``work``; returns what the page shows (``error`` set on bad
    input, never an exception)."""
    t0 = time.perf_counter()
    res = {"error": None, "warnings": [], "out": None}
    try:
        if not front:
            raise UserError("no front image: upload one (PNG with alpha, or a plain background)")
        model = models.get(model_name)
        if model.two_view and not back:
            raise UserError(f"{model.name} is a two-view model: upload the back image too")
        if remove_lines and lines is None:
            raise UserError("no line remover was given to the demo (start it with --remove-lines LINES.pt)")
        out = Path(tempfile.mkdtemp(prefix="job-", dir=work))
        s = R.reconstruct(Path(front), out, Path(back) if back else None, model=model,
                          remove_lines=lines if remove_lines else None, turntable=int(turntable),
                          mesh_resolution=int(mesh_res), texture=bool(texture), keep_framing=bool(keep_framing),
                          texture_size=512 if model.device.type == "cpu" else 1024, save_triplane=False,
                          progress=progress)
        res.update(out=out, summary=s, warnings=list(s.get("warnings", [])))
    except UserError as e:
        res["error"] = str(e)
    except Exception as e:  # noqa: BLE001 - the page says what failed; the details go to the server log
        log.error("reconstruction failed:\n%s", traceback.format_exc())
        res["error"] = f"internal error ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); " \
                       "the details are in the demo's log"
    res["seconds"] = time.perf_counter() - t0
    return res


def status_text(res: dict) -> str:
    if res["error"]:
        return f"**Error:** {res['error']}"
    s = res["summary"]
    mesh = s["mesh"]
    tex = s.get("texture")
    lines = [f"**Done** in {res['seconds']:.1f} s on {s['device']}: mesh {mesh['vertices']:,} vertices / "
             f"{mesh['faces']:,} faces at {mesh['resolution']}^3"
             + (f"; GLB textured ({tex['faces']:,} faces, {tex['size']} px texture)" if tex else
                "; GLB vertex-coloured")]
    lines += [f"- warning: {w}" for w in res["warnings"]]
    return "\n".join(lines)


# ---------------------------------------------------------------- the page

def build(models: Models, lines_path=None, work: Path | None = None, examples=None):
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr
    work = Path(work or tempfile.mkdtemp(prefix="anime3d-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    lines = R.load_line_remover(lines_path, models.device) if lines_path else None
    cpu = models.device.type == "cpu"
    examples = find_examples(cache=work / "examples") if examples is None else examples

    def on_model(name):
        try:
            return describe(models.get(name))
        except UserError as e:
            return f"**Error:** {e}"

    def reconstruct(front, back, model_name, remove_lines, mesh_res, turntable, texture, keep_framing,
                    progress=gr.Progress()):
        res = run_job(models, work, lines, front, back, model_name, remove_lines, mesh_res, turntable, texture,
                      keep_framing, progress=lambda f, msg: progress(f, desc=msg))
        if res["error"]:
            return (status_text(res), None, None, gr.update(value=None, visible=True),
                    gr.update(value=None, visible=False), None, None)
        out, s = res["out"], res["summary"]
        inputs = [str(out / f) for f in ("input_front.png", "input_back.png") if (out / f).is_file()]
        ortho = [(str(out / f"ortho_{v}.png"), v) for v in ("front", "left", "back", "right")]
        mp4, gif = out / "turntable.mp4", out / "turntable.gif"
        video = gr.update(value=str(mp4) if mp4.is_file() else None, visible=mp4.is_file() or not gif.is_file())
        gif_up = gr.update(value=str(gif) if gif.is_file() and not mp4.is_file() else None,
                           visible=gif.is_file() and not mp4.is_file())
        glb = out / "mesh.glb"
        viewer = str(glb) if s["mesh"]["faces"] > 0 else None
        return (status_text(res), inputs, ortho, video, gif_up, viewer, [str(glb), str(out / "mesh.ply")])

    with gr.Blocks(title="anime3d: 3D characters from artwork") as demo:
        gr.Markdown("# anime3d: a 3D character from your artwork\n"
                    "Give the front view (and, for a two-view model, the back view) of a character: a PNG "
                    "with a transparent background, or a drawing on a plain background.  The model "
                    "reconstructs a triplane radiance field, renders it and exports a mesh.")
        with gr.Row():
            with gr.Column(scale=1):
                front = gr.File(label="Front image", type="filepath", elem_id="front_file")
                back = gr.File(label="Back image (two-view models)", type="filepath", elem_id="back_file")
                model = gr.Dropdown(choices=list(models.paths), value=models.default, label="Model",
                                    elem_id="model")
                info = gr.Markdown(on_model(models.default))
                with gr.Row():
                    remove_lines = gr.Checkbox(label="Remove contour lines" + ("" if lines else
                                               " (start the demo with --remove-lines)"), value=False,
                                               interactive=lines is not None)
                    keep_framing = gr.Checkbox(label="Already framed like the training renders", value=False)
                mesh_res = gr.Dropdown(choices=list(MESH_RESOLUTIONS), value=256, label="Mesh resolution")
                turntable = gr.Slider(0, 48, value=8 if cpu else 36, step=1, label="Turntable frames")
                texture = gr.Checkbox(label="UV texture in the GLB (else vertex colours)", value=True)
                run = gr.Button("Reconstruct", variant="primary", elem_id="run")
                status = gr.Markdown("", elem_id="status")
            with gr.Column(scale=2):
                viewer = gr.Model3D(label="Mesh (drag to turn)", elem_id="mesh_view",
                                    clear_color=(1.0, 1.0, 1.0, 1.0), height=420)
                with gr.Row():
                    video = gr.Video(label="Turntable", elem_id="turntable", autoplay=True, loop=True,
                                     interactive=False, height=256, width=256)
                    gif = gr.Image(label="Turntable", visible=False, interactive=False, height=256, width=256)
                    ortho = gr.Gallery(label="Ortho renders (front, left, back, right)", columns=4, height=256,
                                       elem_id="ortho")
                with gr.Row():
                    inputs = gr.Gallery(label="Inputs as the model saw them", columns=2, height=200,
                                        elem_id="inputs")
                    files = gr.File(label="Downloads (GLB, PLY)", file_count="multiple", interactive=False,
                                    elem_id="downloads")
        if examples:
            gr.Examples(examples, inputs=[front, back, keep_framing], label="Examples (front, back)")
        model.change(on_model, model, info)
        run.click(reconstruct, [front, back, model, remove_lines, mesh_res, turntable, texture, keep_framing],
                  [status, inputs, ortho, video, gif, viewer, files], concurrency_limit=1)
    demo.queue(default_concurrency_limit=1)
    demo.work_dir = work
    # the folders the page may serve files from: its work folder and the examples'
    demo.allowed = list(dict.fromkeys([str(work)] + [str(Path(x).parent) for row in examples for x in row[:2]]))
    return demo


@cli_main
def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m _scripts.app", description=__doc__,
                                 formatter_class=lambda prog: argparse.ArgumentDefaultsHelpFormatter(prog, 36))
    ap.add_argument("--ckpt", type=Path, action="append", default=[],
                    help="generator snapshot to offer (repeatable); the released models are always offered")
    ap.add_argument("--model", help="the model selected at start (a released name or a --ckpt file name)")
    ap.add_argument("--registry", type=Path, help="release registry (default _configs/release.toml)")
    ap.add_argument("--remove-lines", type=Path, metavar="LINES_CKPT", help="line-removal checkpoint to offer")
    ap.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:1")
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    ap.add_argument("--port", type=int, default=7860)
    ap.add_argument("--work-dir", type=Path, help="where reconstructions are written (default: a temp folder)")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    models = Models(a.ckpt, a.registry, a.device, a.model)
    demo = build(models, a.remove_lines, a.work_dir)
    print(f"anime3d demo: models {', '.join(models.paths)} on {models.device}; open http://{a.host}:{a.port}",
          flush=True)
    demo.launch(server_name=a.host, server_port=a.port, allowed_paths=demo.allowed, show_error=False,
                quiet=True)


if __name__ == "__main__":
    main()

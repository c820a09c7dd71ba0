"""Generate the evaluation tree of a checkpoint (``_scripts.eval.generate``).

For each test character: condition on its ortho front (and back) view exactly
as training does (``CharacterDataset``), render the ortho front/left/right/back
views and the 12 spin views, and extract the mesh.  Outputs mirror the
ground-truth tree under ``temp/eval/<inferquery>/<renderset>/``:

    input/<shard>/<id>/{front,back}.png       conditioning images as the model saw them
    ortho/<shard>/<id>/<view>.png             predicted ortho views (RGB on white)
    rgb60/<shard>/<id>/<index>.png            predicted spin views (their 60-grid indices)
    mesh/<shard>/<id>/mesh.{ply,glb}          marching-cubes mesh with vertex colours, framed metres
    meta/<shard>/<id>.json                    written last: the character is complete
    generate.json                             checkpoint, generator and options of this tree
    failures.jsonl                            one {"id", "error"} a line

A character whose meta json exists is skipped, so a killed run resumes.
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

import torch

from training import cameras, paths
from training.data import catalog
from training.errors import UserError, atomic_path, fail, save_json_atomic, save_png_atomic
from training.images import to_uint8

ORTHO_NAMES = ("front", "left", "right", "back")
SNAPSHOT_EXTS = (".pt", ".pkl")
INFERQUERY_RE = re.compile(r"^(?P<run>.+)-(?P<num>\d{5})-(?P<kimg>\d+(?:\.\d+)?)$")


def runs_root() -> Path:
    return paths.project_dir() / "_train" / "eg3dc" / "runs"


def resolve_inferquery(q: str, runs: Path | None = None) -> Path:
    """``<run>-<NNNNN>-<kimg>`` -> ``runs/<run>/<NNNNN>/network-snapshot-<kimg>.pt`` (or .pkl).

    KIMG as written (``000920``, ``000000.004``) or zero-padded to 6 digits; a whole kimg also finds the
    run's snapshots named with a fraction of that kimg (``training.run.snapshots``) when there is exactly
    one, and lists them when there are several."""
    from training.run.snapshots import snapshot_key
    m = INFERQUERY_RE.match(q)
    if not m:
        raise UserError(f"--inferquery: expected <run>-<NNNNN>-<kimg> (e.g. nova_body-00003-000920), got {q!r}")
    runs = Path(runs) if runs else runs_root()
    folder = runs / m["run"] / m["num"]
    whole, _, frac = m["kimg"].partition(".")
    kimgs = dict.fromkeys([m["kimg"], f"{int(whole):06d}" + (f".{frac}" if frac else "")])
    for k in kimgs:
        for ext in SNAPSHOT_EXTS:
            p = folder / f"network-snapshot-{k}{ext}"
            if p.is_file():
                return p
    have = sorted((p for p in folder.glob("network-snapshot-*") if snapshot_key(p.name)),
                  key=lambda p: snapshot_key(p.name)) if folder.is_dir() else []
    if not frac:
        same = [p for p in have if p.suffix == ".pt" and int(snapshot_key(p.name)) == int(whole)]
        if len(same) == 1:
            return same[0]
        if len(same) > 1:
            raise fail(folder, f"several snapshots in kimg {int(whole)} ({', '.join(p.name for p in same)}): "
                               f"name one, e.g. {m['run']}-{m['num']}-{same[-1].name[17:-3]}")
    hint = f" (this run has: {', '.join(p.name for p in have[-5:])})" if have else \
        ("" if folder.is_dir() else f" (no run folder {folder}: --runs-dir is {runs})")
    raise fail(folder / f"network-snapshot-{m['kimg']}.pt", f"snapshot not found{hint}")


def inferquery_of(ckpt: Path) -> str:
    """A name for a checkpoint given by path: <run>-<NNNNN>-<kimg> when it sits in a run folder."""
    ckpt = Path(ckpt)
    m = re.match(r"network-snapshot-(\d+(?:\.\d+)?)$", ckpt.stem)
    if m and re.fullmatch(r"\d{5}", ckpt.parent.name):
        return f"{ckpt.parent.parent.name}-{ckpt.parent.name}-{m[1]}"
    return ckpt.stem


def load_eval_generator(path: Path, generator_module: str | None, device) -> torch.nn.Module:
    """G_ema of a checkpoint; ``generator_module`` (class name or path) is checked against it."""
    from training.checkpoint import load_generator
    return load_generator(path, expected=generator_module, device=device).eval().requires_grad_(False)



def eval_views(framing: str) -> list[tuple[str, cameras.View]]:
    """(dtype, view): ortho front/left/right/back then the 12 spin views (named by their 60-grid index)."""
    fr = cameras.get_framing(framing)
    ortho = {v.name: v for v in cameras.view_set("ortho", fr)}
    return [("ortho", ortho[n]) for n in ORTHO_NAMES] + [("rgb60", v) for v in cameras.view_set("spin12", fr)]


def char_dir(out_dir: Path, dtype: str, char_id: str) -> Path:
    return Path(out_dir) / dtype / paths.shard_of(char_id) / char_id


def meta_path(out_dir: Path, char_id: str) -> Path:
    return Path(out_dir) / "meta" / paths.shard_of(char_id) / f"{char_id}.json"


def _slice(planes, i: int):
    if torch.is_tensor(planes):
        return planes[i:i + 1]
    if isinstance(planes, dict):
        return {k: _slice(v, i) for k, v in planes.items()}
    if isinstance(planes, (list, tuple)):
        return type(planes)(_slice(v, i) for v in planes)
    return planes


def _record_failure(out_dir: Path, char_id: str, error: str, failures: list | None = None) -> None:
    p = Path(out_dir) / "failures.jsonl"
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "a") as f:        # append-only log: a torn last line is skipped by readers
        f.write(json.dumps({"id": char_id, "error": error}) + "\n")
    if failures is not None:
        failures.append((char_id, error))


def _check_run_info(out_dir: Path, info: dict, overwrite: bool) -> None:
    p = Path(out_dir) / "generate.json"
    if p.exists() and not overwrite:
        old = json.loads(p.read_text())
        keys = ("checkpoint_sha", "generator", "render_kw", "neural_rendering_resolution", "mesh_resolution",
                "mesh_level", "mesh_step", "front_paste")
        diff = [k for k in keys if old.get(k) != info.get(k)]
        if diff:
            raise fail(p, f"this tree was generated with other settings ({', '.join(diff)}); "
                       "use another --inferquery name or --overwrite")
    save_json_atomic(p, info)


def generate(root, renderset: str, dataset: str | None, split: str, G, ckpt_path: Path, out_dir: Path, *,
             batch: int = 8, mesh_resolution: int = 256, mesh_level: float = 0.5, mesh_step: float | None = None,
             render_kw: dict | None = None,
             neural_rendering_resolution: int | None = None, device=None, limit: int | None = None,
             overwrite: bool = False, progress: bool = True, mesh: bool = True,
             front_paste: bool = False) -> dict:
    """Generate every missing character; returns counts {total, done, skipped, failed} and ``failures``
    [(id, reason)] (also appended to ``failures.jsonl``)."""
    from tqdm import tqdm
    from training.dataset import CharacterDataset, collate
    from training.data.features import file_digest

    root, out_dir = paths.data_root(root), Path(out_dir)
    device = device or next(G.parameters()).device
    render_kw = dict(render_kw or {})
    ids = catalog.select_ids(root, renderset, dataset, split)
    if limit:
        ids = ids[:limit]
    rs_meta = catalog.load_renderset_meta(root, renderset)
    framing = getattr(G, "framing", None) or catalog.framing_of({}, rs_meta) or "head"
    data_framing = catalog.framing_of(catalog.load_char_meta(root, renderset, ids[0]), rs_meta) if ids else None
    if data_framing and data_framing != framing:
        raise fail(paths.renders_dir(root, renderset), f"rendered with {data_framing} framing but the checkpoint "
                   f"was trained with {framing} framing")
    info = {"checkpoint": str(Path(ckpt_path).resolve()), "checkpoint_sha": file_digest(ckpt_path),
            "generator": f"{type(G).__module__}.{type(G).__name__}", "config": getattr(G, "config", {}),
            "renderset": renderset, "dataset": dataset, "split": split, "framing": framing,
            "render_kw": render_kw, "neural_rendering_resolution": neural_rendering_resolution,
            "mesh_resolution": mesh_resolution, "mesh_level": mesh_level, "mesh_step": mesh_step,
            "front_paste": front_paste}
    _check_run_info(out_dir, info, overwrite)

    todo = [c for c in ids if overwrite or not meta_path(out_dir, c).exists()]
    failures: list[tuple[str, str]] = []
    counts = {"total": len(ids), "skipped": len(ids) - len(todo), "done": 0, "failed": 0, "failures": failures}
    if not todo:
        return counts
    ds = CharacterDataset(root, renderset, ids=todo, split=split, random_views=False,
                          cond_resolution=getattr(G, "cond_resolution", None), mirror_prob=0.0)
    views = eval_views(framing)
    two_view = bool(getattr(G, "two_view", False))
    bar = tqdm(total=len(todo), desc="generate", unit="char", disable=not progress)
    for start in range(0, len(todo), batch):
        chunk = list(range(start, min(start + batch, len(todo))))
        t0 = time.time()
        try:
            b = collate([ds[i] for i in chunk])
        except UserError as e:      # one bad character: do the batch one by one to isolate it
            if len(chunk) == 1:
                _record_failure(out_dir, todo[chunk[0]], str(e), failures)
                counts["failed"] += 1
                bar.update(1)
                continue
            items = []
            for i in chunk:
                try:
                    items.append((i, ds[i]))
                except UserError as e1:
                    _record_failure(out_dir, todo[i], str(e1), failures)
                    counts["failed"] += 1
                    bar.update(1)
            if not items:
                continue
            chunk, b = [i for i, _ in items], collate([it for _, it in items])
        cids = [todo[i] for i in chunk]
        B = len(cids)
        cond = {"front": b["cond_front"].to(device), "front_mask": b["cond_front_mask"].to(device)}
        if two_view:
            cond.update(back=b["cond_back"].to(device), back_mask=b["cond_back_mask"].to(device))
        with torch.no_grad():
            planes = G.synthesize(cond)
            for k in ("front", "back"):
                if k in cond:
                    for j, cid in enumerate(cids):
                        save_png_atomic(char_dir(out_dir, "input", cid) / f"{k}.png", to_uint8(cond[k][j]))
            if front_paste:     # PAniC-3D inference extra: the input replaces pixels seen from the front
                from training.infer import front_paste
                fcam = front_paste.front_camera(framing, B, device)
                nr = neural_rendering_resolution or G.neural_rendering_resolution
                front_depth = G.render(planes, fcam, nr, superresolve=False, **render_kw)["image_depth"]
            for dtype, v in views:
                c = torch.from_numpy(v.cam25()).to(device)[None].expand(B, -1)
                out = G.render(planes, c, neural_rendering_resolution, **render_kw)
                if front_paste:
                    out["image"], _ = front_paste.paste_front(
                        out["image"], out["image_xyz"], out["image_alpha"], cond["front"].to(out["image"]),
                        front_depth, fcam, 0.02 * G.field.box_warp)
                for j, cid in enumerate(cids):
                    save_png_atomic(char_dir(out_dir, dtype, cid) / f"{v.name}.png", to_uint8(out["image"][j]))
        t_render = time.time() - t0
        for j, cid in enumerate(cids):
            meta = {"id": cid, "framing": framing, "views": {d: {} for d in ("ortho", "rgb60")},
                    "render_seconds_per_char": round(t_render / B, 3)}
            for dtype, v in views:
                meta["views"][dtype][v.name] = v.to_json()
            if mesh:
                t1 = time.time()
                m, step = _extract(G, _slice(planes, j), mesh_resolution, mesh_level, mesh_step)
                mdir = char_dir(out_dir, "mesh", cid)
                for ext in ("ply", "glb"):
                    with atomic_path(mdir / f"mesh.{ext}") as tmp:
                        m.export(tmp, file_type=ext)
                meta["mesh"] = {"vertices": int(len(m.vertices)), "faces": int(len(m.faces)),
                                "resolution": mesh_resolution, "level": mesh_level, "step": step,
                                "seconds": round(time.time() - t1, 3)}
            save_json_atomic(meta_path(out_dir, cid), meta)
            counts["done"] += 1
            bar.update(1)
    bar.close()
    return counts


def _extract(G, planes, resolution: int, level: float, step: float | None):
    """(mesh, the step it was extracted at): None is the framing's step, as _scripts.infer extracts it."""
    from training.infer import meshing
    rep = meshing.MeshReport(resolution, level, True, 0.5)
    with torch.no_grad():
        m = meshing.extract_mesh(G, planes, resolution=resolution, level=level, step=step, report=rep)
    return m, rep.step

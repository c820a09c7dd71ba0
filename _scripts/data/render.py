"""Render characters into the data tree: renders/<renderset>/<dtype>/<shard>/<id>/<view>.png.

    python -m _scripts.data.render --src raw/synth --renderset synth_body --framing body
    python -m _scripts.data.render --source vroid --renderset rutileE --framing head --workers 4 --shard 0/2

Resumable (a character is complete when its meta json exists), shardable
(--shard i/n over machines, --workers processes with their own GL context),
failures go to renders/<renderset>/failures.jsonl and the run goes on; the exit
code is 1 when a character failed (docs/DESIGN.md, "Data jobs").
Documentation: docs/data_render.md.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import time
import zlib
from pathlib import Path

from training import paths
from training.data import render
from training.errors import UserError, fail, save_json_atomic
from training.jobs import JobReport, data_job_main


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m _scripts.data.render", description=__doc__.split("\n")[0])
    p.add_argument("--src", help="a character file or a folder searched recursively for .vrm .glb .gltf .obj "
                                 "(default: raw/<source> under the data root)")
    p.add_argument("--source", help="source name: raw/<source> when --src is absent; recorded in the meta")
    p.add_argument("--renderset", required=True, help="output renders/<renderset>/")
    p.add_argument("--framing", required=True, choices=["head", "body"])
    p.add_argument("--size", type=int, default=512, help="output size in pixels (rendered at 2x, box-filtered)")
    p.add_argument("--supersample", type=int, default=2, help="supersampling factor (default 2)")
    p.add_argument("--dtypes", default=",".join(render.DEFAULT_DTYPES),
                   help=f"comma-separated, from {','.join(render.DTYPES)}")
    p.add_argument("--grid60", action="store_true", help="also render rgb60 and xyza60 (the 60-view grid)")
    p.add_argument("--lines", action="store_true", help="also render ortho_lines (ortho views with contour lines)")
    p.add_argument("--arm-angle", type=float, default=60.0, help="lower the arms by this angle (deg; 0 = T-pose)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random perspective views")
    p.add_argument("--workers", type=int, default=1, help="worker processes (each with its own GL context)")
    p.add_argument("--shard", default="0/1", help="i/n: render only the characters of shard i of n (by id hash)")
    p.add_argument("--limit", type=int, default=None, help="render at most this many characters (after sharding)")
    paths.add_data_root_arg(p)
    g = p.add_argument_group("loader options")
    g.add_argument("--facing", choices=["auto", "+z", "-z"], default=None, help="glTF/VRM: where the file's character looks")
    g.add_argument("--up-axis", choices=["auto", "y", "z"], default=None, help="OBJ: up axis of the file")
    g.add_argument("--forward-axis", choices=["auto", "+z", "-z", "+y", "-y"], default=None,
                   help="OBJ: where the file's character looks")
    g.add_argument("--include", action="append", default=None, help="OBJ: keep only objects/groups matching (glob, repeatable)")
    g.add_argument("--exclude", action="append", default=None, help="OBJ: drop objects/groups matching (glob, repeatable)")
    g.add_argument("--texture", default=None, help="OBJ: colour texture for materials whose MTL names none")
    return p.parse_args(argv)


def parse_shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise UserError(f"--shard: expected i/n (e.g. 0/4), got {text!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise UserError(f"--shard: need 0 <= i < n, got {text!r}")
    return i, n


def in_shard(char_id: str, i: int, n: int) -> bool:
    return zlib.crc32(char_id.encode()) % n == i


def settings_from_args(a) -> render.RenderSettings:
    dtypes = [d.strip() for d in a.dtypes.split(",") if d.strip()]
    if a.grid60:
        dtypes += ["rgb60", "xyza60"]
    if a.lines:
        dtypes += ["ortho_lines"]
    dtypes = tuple(dict.fromkeys(dtypes))
    load = {"up_axis": a.up_axis, "forward_axis": a.forward_axis, "include": a.include, "exclude": a.exclude,
            "texture": str(Path(a.texture).resolve()) if a.texture else None, "facing": a.facing}
    if a.texture and not Path(a.texture).is_file():
        raise fail(a.texture, "texture file not found")
    if a.supersample < 1 or a.supersample > 4:
        raise UserError(f"--supersample: expected 1..4, got {a.supersample}")
    return render.RenderSettings(a.renderset, a.framing, a.size, dtypes, a.seed, a.arm_angle, a.supersample,
                                 {k: v for k, v in load.items() if v is not None})


def write_renderset_meta(root: Path, settings: render.RenderSettings) -> None:
    """Write (or check and extend) renders/<renderset>/<renderset>_meta.json.
    Also the early check that the output folder is writable."""
    p = paths.renderset_meta_path(root, settings.renderset)
    new = render.renderset_meta(settings)
    if p.exists():
        try:
            old = json.loads(p.read_text())
        except (OSError, ValueError) as e:
            raise fail(p, f"unreadable renderset meta ({e})") from None
        for k in ("framing", "size", "supersample", "seed", "arm_angle"):
            if old.get(k) != new[k]:
                raise fail(p, f"renderset {settings.renderset!r} was rendered with {k}={old.get(k)!r}, "
                              f"not {new[k]!r}: use another --renderset")
        new["dtypes"] = list(dict.fromkeys(old.get("dtypes", []) + new["dtypes"]))
        new["views"] = {**old.get("views", {}), **new["views"]}
    save_json_atomic(p, new)


_WORKER = {}


def _init_worker(root, settings, source):
    _WORKER.update(root=root, settings=settings, source=source)


def _render_task(item):
    """Runs in a worker: (id, file) -> (id, file, error or None, loader warnings, seconds)."""
    char_id, path = item
    w = _WORKER
    t0 = time.time()
    try:
        meta = render.render_character(w["root"], w["settings"], path, char_id, w["source"])
        warnings = list(((meta or {}).get("loader") or {}).get("warnings") or [])
        return char_id, str(path), None, warnings, time.time() - t0
    except UserError as e:
        return char_id, str(path), str(e), [], time.time() - t0
    except MemoryError:
        return char_id, str(path), f"{path}: out of memory", [], time.time() - t0
    except Exception as e:  # noqa: BLE001 - a broken file must not stop the batch
        return char_id, str(path), f"{path}: {type(e).__name__}: {e}", [], time.time() - t0


def failures_path(root: Path, renderset: str) -> Path:
    return paths.renders_dir(root, renderset) / "failures.jsonl"


def record_failure(root: Path, renderset: str, char_id: str, path: str, error: str) -> None:
    p = failures_path(root, renderset)
    line = json.dumps({"id": char_id, "file": path, "error": error,
                       "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    with open(p, "a") as f:   # one short line per write: appends from one process stay whole
        f.write(line + "\n")


def run(argv=None) -> JobReport:
    """Render every character of the shard; returns the finished JobReport (training.jobs rule)."""
    from tqdm import tqdm
    a = parse_args(argv)
    root = paths.data_root(a.data_root)
    if a.src is None and a.source is None:
        raise UserError("give --src FILE_OR_DIR or --source NAME (raw/<NAME> under the data root)")
    src = Path(a.src) if a.src else paths.raw_dir(root, a.source)
    settings = settings_from_args(a)
    shard_i, shard_n = parse_shard(a.shard)
    if a.workers < 1:
        raise UserError(f"--workers: expected >= 1, got {a.workers}")
    found = render.find_characters(src)
    if not found:
        raise fail(src, f"no character files ({', '.join(render.CHARACTER_SUFFIXES)}) here")
    items = [(cid, f) for cid, f in found if in_shard(cid, shard_i, shard_n)]
    write_renderset_meta(root, settings)
    todo = [(cid, f) for cid, f in items
            if not set(settings.dtypes) <= render.done_dtypes(root, settings.renderset, cid)]
    if a.limit is not None:
        todo = todo[:a.limit]
    report = JobReport("render", done_word="rendered")
    report.skipped(len(items) - len(todo))
    if len(items) < len(found):
        report.notes.append(f"{len(found) - len(items)} of the {len(found)} characters belong to other shards")
    print(f"render: {len(items)} characters in shard {shard_i}/{shard_n}, {report.n_skipped} already complete, "
          f"{len(todo)} to render -> {paths.renders_dir(root, settings.renderset)}", file=sys.stderr)
    if todo:
        if a.workers == 1:
            _init_worker(root, settings, a.source)
            results = map(_render_task, todo)
            pool = None
        else:
            pool = mp.get_context("spawn").Pool(min(a.workers, len(todo)), _init_worker, (root, settings, a.source))
            results = pool.imap_unordered(_render_task, todo)
        try:
            bar = tqdm(results, total=len(todo), unit="char", desc=settings.renderset)
            for char_id, path, err, warnings, _ in bar:
                if err is None:
                    report.done()
                    for w in warnings:      # rendered, but not as the file intends (docs/data_render.md)
                        report.warn(char_id, w)
                else:
                    record_failure(root, settings.renderset, char_id, path, err)
                    report.failed(char_id, err)
                bar.set_postfix(failed=report.n_failed)
        finally:
            if pool is not None:
                pool.close()
                pool.join()
    if report.failures:
        report.failures_file = failures_path(root, settings.renderset)
    report.result = {"found": len(items), "skipped": report.n_skipped, "rendered": report.n_done,
                     "failed": report.n_failed}
    return report.finish()


@data_job_main
def main(argv=None):
    return run(argv)


if __name__ == "__main__":
    main()

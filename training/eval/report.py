"""One-page HTML report of an evaluation: the metric table, then per character
the inputs and, for every evaluated view, the prediction above the ground truth.

Images are linked by paths relative to the report (open it in place, or copy
the evaluation folder together with the data tree), or embedded as small
base64 thumbnails with ``thumbs=N`` so the page stands alone.
"""
from __future__ import annotations

import base64
import html
import io
import math
import os
from pathlib import Path

from training import paths
from training.errors import atomic_write

CSS = """
body{font-family:sans-serif;margin:1.5em;color:#222}
table.metrics{border-collapse:collapse;margin:.5em 0}
table.metrics td,table.metrics th{border:1px solid #ccc;padding:2px 8px;text-align:right}
table.metrics td:first-child,table.metrics td:nth-child(2){text-align:left}
.char{margin:1.5em 0;border-top:2px solid #888;padding-top:.5em}
.views{display:flex;flex-wrap:wrap;gap:6px}
.view{display:flex;flex-direction:column;align-items:center;font-size:11px}
.view img{width:var(--w);height:var(--w);object-fit:contain;background:#fff;border:1px solid #ddd;display:block}
.inputs .view img{border-color:#48c}
.note{color:#a40;font-size:12px}
.small{font-size:12px;color:#555}
"""


def _fmt(v) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, str):
        return html.escape(v)
    return f"{v:.3f}" if math.isfinite(v) else "inf"


def _img_src(path: Path, report_dir: Path, thumbs: int | None) -> str | None:
    if not Path(path).exists():
        return None
    if thumbs:
        from PIL import Image
        im = Image.open(path)
        im.thumbnail((thumbs, thumbs))
        if im.mode in ("RGBA", "LA", "P"):          # transparent GT renders: show them on white
            im = im.convert("RGBA")
            bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
            im = Image.alpha_composite(bg, im)
        buf = io.BytesIO()
        im.convert("RGB").save(buf, format="JPEG", quality=85)
        return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()
    return Path(os.path.relpath(path, report_dir)).as_posix()


def _cell(label: str, src: str | None) -> str:
    img = f'<img loading="lazy" src="{html.escape(src)}" alt="{html.escape(label)}">' if src else \
        '<div style="width:var(--w);height:var(--w);border:1px dashed #c88"></div>'
    return f'<div class="view">{img}<span>{html.escape(label)}</span></div>'


def metrics_table(rows: list[dict]) -> str:
    out = ['<table class="metrics"><tr><th>subset</th><th>metric</th><th>value</th><th>n</th></tr>']
    for r in rows:
        note = f' <span class="note">{html.escape(str(r["note"]))}</span>' if r.get("note") else ""
        out.append(f"<tr><td>{html.escape(r['subset'])}</td><td>{html.escape(r['metric'])}</td>"
                   f"<td>{_fmt(r['value'])}</td><td>{r.get('n', '')}{note}</td></tr>")
    out.append("</table>")
    return "\n".join(out)


def _char_scores(rec: dict) -> str:
    parts = []
    for sub in ("front", "back", "side", "360", "geom"):
        d = rec.get(sub)
        if isinstance(d, dict):
            if "error" in d:
                parts.append(f"{sub}: <span class='note'>{html.escape(d['error'])}</span>")
                continue
            vals = ", ".join(f"{k} {_fmt(v)}" for k, v in d.items()
                             if isinstance(v, (int, float)) and not isinstance(v, bool) and not k.endswith("faces"))
            parts.append(f"<b>{sub}</b>: {vals}")
    return "<br>".join(parts)


def write_report(path, result: dict, *, root, renderset: str, eval_dir, views: list[tuple[str, str]],
                 title: str = "evaluation", thumbs: int | None = None, max_chars: int | None = 200,
                 width: int = 128) -> Path:
    """``views``: (dtype, view name) pairs to show; GT comes from ``renders/<renderset>``."""
    path, eval_dir = Path(path), Path(eval_dir)
    rdir = path.parent
    body = [f"<h1>{html.escape(title)}</h1>",
            f'<p class="small">renderset <b>{html.escape(renderset)}</b>, {result.get("n_characters", 0)} characters; '
            "subsets: front/back = ortho views, 360 = mean over the 12 spin views, geom = CD (metres x 100) and "
            "F1 at 5 mm / 10 mm, all averaged over characters.</p>",
            metrics_table(result["table"])]
    for m, why in result.get("unavailable", {}).items():
        body.append(f'<p class="note">{html.escape(m)} unavailable: {html.escape(why)}</p>')
    chars = list(result.get("per_character", {}).items())
    if max_chars is not None and len(chars) > max_chars:
        body.append(f'<p class="note">showing the first {max_chars} of {len(chars)} characters</p>')
        chars = chars[:max_chars]
    for cid, rec in chars:
        shard = paths.shard_of(cid)
        inputs = [_cell(f"input {k}", _img_src(eval_dir / "input" / shard / cid / f"{k}.png", rdir, thumbs))
                  for k in ("front", "back") if (eval_dir / "input" / shard / cid / f"{k}.png").exists()]
        pred, gt = [], []
        for dtype, v in views:
            label = v if dtype == "ortho" else f"{dtype}/{v}"
            pred.append(_cell(f"pred {label}", _img_src(eval_dir / dtype / shard / cid / f"{v}.png", rdir, thumbs)))
            gt.append(_cell(f"gt {label}", _img_src(paths.render_path(root, renderset, dtype, cid, v), rdir, thumbs)))
        mesh = eval_dir / "mesh" / shard / cid / "mesh.glb"
        mesh_link = f' <a href="{html.escape(os.path.relpath(mesh, rdir))}">mesh.glb</a>' if mesh.exists() else ""
        body.append(f'<div class="char" id="{html.escape(cid)}"><h3>{html.escape(cid)}{mesh_link}</h3>'
                    f'<p class="small">{_char_scores(rec)}</p>'
                    f'<div class="views inputs">{"".join(inputs)}</div>'
                    f'<div class="views">{"".join(pred)}</div><div class="views">{"".join(gt)}</div></div>')
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>:root{{--w:{int(width)}px}}{CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
    with atomic_write(path, "w") as f:
        f.write(page)
    return path

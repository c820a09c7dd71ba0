"""Contact sheet of rendered characters: front and back ortho views side by side, on white.

    python -m _scripts.data.render --src _data/lustrous/raw/synth --renderset synth_body --framing body --size 256
    python -m _scripts.data.contact_sheet --src synth_body --out docs/images/synth_contact_sheet.png

``--src`` is a renderset name (under the data root) or a renders/<renderset>
folder (one holding ``ortho/``).  Reads ``ortho/<shard>/<id>/{front,back}.png``.
A character whose images cannot be read is listed and left out; the exit code
is then 1 (docs/DESIGN.md, "Data jobs").
"""
from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image, ImageDraw

from training import paths
from training.errors import UserError, atomic_write, fail, load_image
from training.jobs import JobReport, data_job_main


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m _scripts.data.contact_sheet", description=__doc__.split("\n")[0])
    p.add_argument("--src", required=True, help="renderset name or renders/<renderset> folder")
    p.add_argument("--out", required=True, help="output PNG")
    p.add_argument("--count", type=int, default=16, help="characters on the sheet (default 16)")
    p.add_argument("--cols", type=int, default=4, help="characters per row (each shows front | back)")
    p.add_argument("--cell", type=int, default=256, help="pixel height of one view")
    p.add_argument("--views", default="front,back", help="ortho views per character, comma-separated")
    p.add_argument("--labels", action="store_true", help="write the character id under each pair")
    p.add_argument("--no-crop", action="store_true", help="keep the full frame (default: crop all views to the union of their silhouettes)")
    paths.add_data_root_arg(p)
    return p.parse_args(argv)


def renderset_folder(src: str, data_root) -> Path:
    p = Path(src)
    if (p / "ortho").is_dir():
        return p
    q = paths.renders_dir(paths.data_root(data_root), src)
    if (q / "ortho").is_dir():
        return q
    raise fail(src, f"no ortho/ renders here or in {q} (run `python -m _scripts.data.render` first)")


def character_folders(rs: Path, views: list[str]) -> list[Path]:
    out = [d for d in sorted((rs / "ortho").glob("*/*")) if all((d / f"{v}.png").exists() for v in views)]
    return sorted(out, key=lambda d: d.name)


def common_crop(images) -> tuple[int, int, int, int]:
    """Union of the alpha bounding boxes (same crop for all views keeps relative sizes comparable)."""
    x0 = y0 = 10 ** 9
    x1 = y1 = -1
    for im in images:
        bb = im.getchannel("A").point(lambda a: 255 if a > 8 else 0).getbbox()
        if bb:
            x0, y0, x1, y1 = min(x0, bb[0]), min(y0, bb[1]), max(x1, bb[2]), max(y1, bb[3])
    if x1 < 0:
        return (0, 0) + images[0].size
    w, h = images[0].size
    pad = max(2, (y1 - y0) // 30)
    return max(0, x0 - pad), max(0, y0 - pad), min(w, x1 + pad), min(h, y1 + pad)


def load_views(folders: list[Path], views: list[str], report: JobReport | None = None):
    """(folders, images) of the characters whose views all load; the others are failures of ``report``."""
    kept, ims = [], []
    for d in folders:
        try:
            ims.append([load_image(d / f"{v}.png", "RGBA") for v in views])
            kept.append(d)
        except UserError as e:
            if report is None:
                raise
            report.failed(d.name, str(e))
    return kept, ims


def make_sheet(folders: list[Path], views: list[str], cols: int, cell: int, labels: bool, crop: bool = True,
               ims=None) -> Image.Image:
    if ims is None:
        folders, ims = load_views(folders, views)
    box = common_crop([im for row in ims for im in row]) if crop else (0, 0) + ims[0][0].size
    cw = max(1, round(cell * (box[2] - box[0]) / (box[3] - box[1])))
    rows = (len(folders) + cols - 1) // cols
    gap, lab = cell // 12, (14 if labels else 0)
    W = cols * (len(views) * cw + gap) + gap
    H = rows * (cell + gap + lab) + gap
    sheet = Image.new("RGB", (W, H), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i, d in enumerate(folders):
        r, c = divmod(i, cols)
        x0 = gap + c * (len(views) * cw + gap)
        y0 = gap + r * (cell + gap + lab)
        for k, im in enumerate(ims[i]):
            im = im.crop(box).resize((cw, cell), Image.LANCZOS)
            tile = Image.new("RGB", (cw, cell), (255, 255, 255) if k % 2 == 0 else (244, 244, 248))
            tile.paste(im, (0, 0), im)
            sheet.paste(tile, (x0 + k * cw, y0))
        if labels:
            draw.text((x0 + 2, y0 + cell + 1), d.name, fill=(90, 90, 90))
    return sheet


@data_job_main
def main(argv=None):
    a = parse_args(argv)
    views = [v.strip() for v in a.views.split(",") if v.strip()]
    rs = renderset_folder(a.src, a.data_root)
    folders = character_folders(rs, views)
    if not folders:
        raise fail(rs / "ortho", f"no character has all of {views}")
    report = JobReport("contact_sheet", done_word="characters on the sheet")
    folders, ims = load_views(folders[: a.count], views, report)
    if not folders:
        report.notes.append("no sheet written: no character could be read")
        return report.finish()
    report.done(len(folders))
    sheet = make_sheet(folders, views, a.cols, a.cell, a.labels, crop=not a.no_crop, ims=ims)
    # a palette keeps the sheet small enough for the README (< 1 MB)
    q = sheet.quantize(colors=255, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    out = Path(a.out)
    with atomic_write(out) as f:
        q.save(f, format="PNG", optimize=True)
    print(f"contact sheet: {len(folders)} characters -> {out} ({out.stat().st_size // 1024} KB)")
    return report.finish() if report.failures else report


if __name__ == "__main__":
    main()

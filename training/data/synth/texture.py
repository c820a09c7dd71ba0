"""The per-character base-colour atlas: fixed tiles painted with PIL, plus solid-colour swatches.

Tiles are painted in their part's surface coordinates (u around, v along; see
``geometry.py``); the face tile is an orthographic *front view* of the head
(u = character's left to the image right, as the front camera sees it).
Everything is drawn at 2x and downsampled, which gives anti-aliased edges and
keeps the result deterministic (PIL only, no randomness beyond the rng passed in).
"""
from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image, ImageDraw

ATLAS = 1024
SS = 2  # supersampling of painted tiles


@dataclasses.dataclass(frozen=True)
class Tile:
    x: int
    y: int
    w: int
    h: int

    def map(self, st: np.ndarray) -> np.ndarray:
        """Surface coordinates (N,2) in [0,1] -> atlas UVs, inset half a pixel so sampling stays inside."""
        st = np.clip(st, 0.0, 1.0)
        u = (self.x + 0.5 + st[:, 0] * (self.w - 1)) / ATLAS
        v = (self.y + 0.5 + st[:, 1] * (self.h - 1)) / ATLAS
        return np.stack([u, v], -1)

    def centre(self, n: int) -> np.ndarray:
        return np.tile([[(self.x + self.w / 2) / ATLAS, (self.y + self.h / 2) / ATLAS]], (n, 1))


TILES = {
    "face": Tile(0, 0, 512, 512),
    "torso": Tile(512, 0, 512, 256),
    "skirt": Tile(512, 256, 512, 128),
    "arm": Tile(512, 384, 256, 128),
    "leg": Tile(768, 384, 256, 128),
    "strand": Tile(0, 512, 256, 256),
    "cap": Tile(256, 512, 256, 256),
    "lace": Tile(512, 512, 256, 64),
    "jacket": Tile(768, 512, 256, 128),
    "glasses": Tile(512, 576, 256, 128),
    "backpack": Tile(512, 704, 256, 64),
    "ear": Tile(768, 640, 128, 64),
    "hat": Tile(896, 640, 128, 64),
}
SWATCH_REGION = (0, 768, 1024, 256)   # x, y, w, h: 16 px solid swatches


def shade(c, f: float) -> tuple:
    return tuple(int(np.clip(round(v * f), 0, 255)) for v in c[:3])


def mix(a, b, t: float) -> tuple:
    return tuple(int(round(x * (1 - t) + y * t)) for x, y in zip(a[:3], b[:3]))


class Atlas:
    def __init__(self):
        self.image = Image.new("RGBA", (ATLAS, ATLAS), (255, 255, 255, 255))
        self.swatches: dict[tuple, Tile] = {}

    def swatch(self, rgb) -> Tile:
        key = tuple(int(c) for c in rgb[:3])
        if key not in self.swatches:
            i = len(self.swatches)
            x0, y0, w, _ = SWATCH_REGION
            per_row = w // 16
            t = Tile(x0 + 16 * (i % per_row), y0 + 16 * (i // per_row), 16, 16)
            self.image.paste(key + (255,), (t.x, t.y, t.x + 16, t.y + 16))
            self.swatches[key] = t
        return self.swatches[key]

    def paint(self, name: str, fn, flip_v: bool = False, background=(255, 255, 255, 255)):
        """Call ``fn(draw, W, H, img)`` on a 2x canvas of the tile and paste it downsampled."""
        t = TILES[name]
        img = Image.new("RGBA", (t.w * SS, t.h * SS), background)
        fn(ImageDraw.Draw(img), t.w * SS, t.h * SS, img)
        img = img.resize((t.w, t.h), Image.LANCZOS)
        if flip_v:
            img = img.transpose(Image.FLIP_TOP_BOTTOM)
        self.image.paste(img, (t.x, t.y))


# ---------------------------------------------------------------- face

def paint_face(atlas: Atlas, p: dict, jaw) -> None:
    """Anime face, front view, in head-normalised coordinates (x, y in [-1, 1], y up)."""
    face, body = p["face"], p["body"]
    skin = tuple(body["skin"])

    def fn(d, W, H, img):
        X = lambda x: (x + 1) / 2 * W          # noqa: E731
        Y = lambda y: (1 - y) / 2 * H          # noqa: E731
        d.rectangle([0, 0, W, H], fill=skin + (255,))
        # soft shadow under the bangs line and on the neck side of the jaw
        es = face["eye_size"]
        ey = -0.16
        ew, eh = 0.25 * es, 0.33 * es
        line = (52, 34, 40)
        if face["blush"]:
            layer = Image.new("RGBA", img.size, (0, 0, 0, 0))
            ld = ImageDraw.Draw(layer)
            for sx in (-1, 1):
                cx, cy = sx * 0.52, ey - eh * 0.85
                ld.ellipse([X(cx - 0.15), Y(cy + 0.06), X(cx + 0.15), Y(cy - 0.06)], fill=(255, 120, 140, 90))
                for k in range(3):       # hatching strokes
                    hx = cx - 0.06 + 0.05 * k
                    ld.line([X(hx + 0.02), Y(cy + 0.035), X(hx - 0.02), Y(cy - 0.035)], fill=(230, 80, 110, 170), width=max(1, W // 300))
            img.alpha_composite(layer)
        for sx in (-1, 1):
            cx = sx * face["eye_spacing"]
            tilt = face["eye_tilt"]
            # eyebrows: thin arcs following the eye tilt (reversed for expression)
            by = ey + eh * 0.95 + 0.13
            brow = [(cx - sx * 0.11, by + 0.01), (cx - sx * 0.02, by + 0.035), (cx + sx * 0.07, by + 0.035),
                    (cx + sx * 0.15, by + 0.0 + tilt * 0.2)]
            d.line([(X(a), Y(b)) for a, b in brow], fill=tuple(face["brow_colour"]) + (255,), width=max(2, W // 150), joint="curve")
            if face["closed_eyes"]:
                pts = [(cx - ew * 0.9, ey - 0.02), (cx, ey + eh * 0.35), (cx + ew * 0.9, ey - 0.02)]
                d.line([(X(a), Y(b)) for a, b in pts], fill=line + (255,), width=max(3, W // 60), joint="curve")
                continue
            # sclera
            box = [X(cx - ew), Y(ey + eh * 0.55), X(cx + ew), Y(ey - eh * 0.6)]
            d.ellipse(box, fill=(255, 255, 255, 255))
            # iris with vertical gradient, clipped to the sclera
            iris = tuple(face["iris"])
            mask = Image.new("L", img.size, 0)
            ImageDraw.Draw(mask).ellipse(box, fill=255)
            layer = Image.new("RGBA", img.size, (0, 0, 0, 0))
            ld = ImageDraw.Draw(layer)
            iw, ih = ew * 0.68, eh * 0.7
            icy = ey - eh * 0.08
            n = 12
            for k in range(n):           # concentric-from-top bands: dark top, light bottom
                t = k / (n - 1)
                col = mix(shade(iris, 0.35), mix(iris, (255, 255, 255), 0.35), t)
                top = icy + ih - 2 * ih * t * 0.5
                ld.ellipse([X(cx - iw), Y(top), X(cx + iw), Y(icy - ih)], fill=col + (255,))
            ld.ellipse([X(cx - iw), Y(icy + ih), X(cx + iw), Y(icy - ih)], outline=shade(iris, 0.3) + (255,), width=max(1, W // 250))
            ld.ellipse([X(cx - iw * 0.45), Y(icy + ih * 0.5), X(cx + iw * 0.45), Y(icy - ih * 0.5)], fill=shade(iris, 0.2) + (255,))
            # highlights: big upper one on the outer side, small lower one
            hx = cx - sx * iw * 0.35
            ld.ellipse([X(hx - iw * 0.32), Y(icy + ih * 0.62), X(hx + iw * 0.32), Y(icy + ih * 0.08)], fill=(255, 255, 255, 255))
            hx2 = cx + sx * iw * 0.38
            ld.ellipse([X(hx2 - iw * 0.14), Y(icy - ih * 0.35), X(hx2 + iw * 0.14), Y(icy - ih * 0.62)], fill=(255, 255, 255, 230))
            img.paste(layer, (0, 0), Image.composite(layer, Image.new("RGBA", img.size, (0, 0, 0, 0)), mask))
            # upper lash line: thick, with a wing at the outer corner (tilt lifts it)
            inner, outer = cx - sx * ew * 1.05, cx + sx * ew * 1.1
            lash_top = [(inner, ey + eh * 0.4), (cx - sx * ew * 0.4, ey + eh * 0.6), (cx + sx * ew * 0.4, ey + eh * 0.63),
                        (outer + sx * 0.03, ey + eh * 0.48 + tilt), (outer + sx * 0.05, ey + eh * 0.28 + tilt)]
            lash_bot = [(outer, ey + eh * 0.3 + tilt * 0.6), (cx + sx * ew * 0.4, ey + eh * 0.5),
                        (cx - sx * ew * 0.4, ey + eh * 0.5), (inner, ey + eh * 0.33)]
            d.polygon([(X(a), Y(b)) for a, b in lash_top + lash_bot], fill=line + (255,))
            # lower lash: short stroke at the outer half
            low = [(cx + sx * ew * 0.1, ey - eh * 0.62), (cx + sx * ew * 0.75, ey - eh * 0.45)]
            d.line([(X(a), Y(b)) for a, b in low], fill=shade(line, 1.3) + (255,), width=max(1, W // 220))
        # nose: a small shadow tick
        d.line([(X(0.01), Y(-0.42)), (X(-0.015), Y(-0.46))], fill=shade(skin, 0.78) + (255,), width=max(1, W // 260))
        # mouth
        my = -0.64
        mc = (150, 50, 60)
        kind = face["mouth"]
        if kind == "smile":
            d.arc([X(-0.09), Y(my + 0.07), X(0.09), Y(my - 0.05)], 20, 160, fill=line + (255,), width=max(2, W // 200))
        elif kind == "small":
            d.line([(X(-0.045), Y(my)), (X(0.045), Y(my))], fill=line + (255,), width=max(2, W // 220))
        elif kind == "cat":
            pts = [(-0.1, my + 0.03), (-0.05, my - 0.02), (0, my + 0.02), (0.05, my - 0.02), (0.1, my + 0.03)]
            d.line([(X(a), Y(b)) for a, b in pts], fill=line + (255,), width=max(2, W // 220), joint="curve")
        else:   # open / grin: dark mouth with tongue
            w = 0.08 if kind == "open" else 0.11
            d.chord([X(-w), Y(my + 0.06), X(w), Y(my - 0.09)], 0, 180, fill=mc + (255,))
            d.chord([X(-w * 0.6), Y(my - 0.02), X(w * 0.6), Y(my - 0.09)], 0, 180, fill=(236, 120, 130, 255))
            if kind == "grin":
                d.rectangle([X(-w * 0.7), Y(my + 0.015), X(w * 0.7), Y(my - 0.005)], fill=(255, 255, 255, 255))

    atlas.paint("face", fn)


# ---------------------------------------------------------------- clothing

def _print_shape(d, kind, cx, cy, r, col):
    col = tuple(col) + (255,)
    if kind == "star":
        pts = []
        for k in range(10):
            a = np.pi / 2 + k * np.pi / 5
            rr = r if k % 2 == 0 else r * 0.45
            pts.append((cx + rr * np.cos(a), cy - rr * np.sin(a)))
        d.polygon(pts, fill=col)
    elif kind == "heart":
        d.ellipse([cx - r, cy - r * 0.8, cx, cy + r * 0.1], fill=col)
        d.ellipse([cx, cy - r * 0.8, cx + r, cy + r * 0.1], fill=col)
        d.polygon([(cx - r * 0.95, cy - r * 0.2), (cx + r * 0.95, cy - r * 0.2), (cx, cy + r)], fill=col)
    elif kind == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], outline=col, width=int(r * 0.3))
        d.ellipse([cx - r * 0.3, cy - r * 0.3, cx + r * 0.3, cy + r * 0.3], fill=col)
    elif kind == "cross":
        w = r * 0.35
        d.rectangle([cx - w, cy - r, cx + w, cy + r], fill=col)
        d.rectangle([cx - r, cy - w, cx + r, cy + w], fill=col)
    elif kind == "number":   # a bold seven-segment digit
        w, h, t = r * 0.7, r, r * 0.28
        d.rectangle([cx - w, cy - h, cx + w, cy - h + t], fill=col)
        d.polygon([(cx + w - t, cy - h), (cx + w, cy - h), (cx - w * 0.2, cy + h), (cx - w * 0.2 - t * 1.3, cy + h)], fill=col)


def paint_torso(atlas: Atlas, p: dict, waist_v: float, rng) -> None:
    """Torso tile, upright (v = 0 at the neck); u = 0.25 front centre, 0.75 back centre."""
    o, skin = p["outfit"], tuple(p["body"]["skin"])
    top, acc = tuple(o["top_colour"]), tuple(o["accent"])
    bottom = tuple(o["bottom_colour"])

    def fn(d, W, H, img):
        fx, bx = W * 0.25, W * 0.75
        d.rectangle([0, 0, W, H], fill=top + (255,))
        # subtle fold shading at the sides (u = 0, 0.5, 1 are the flanks)
        for sx in (0, W * 0.5, W):
            d.rectangle([sx - W * 0.03, 0, sx + W * 0.03, H], fill=shade(top, 0.9) + (255,))
        wy = waist_v * H
        if o["bottom"] in ("trousers", "shorts") or o["top"] != "dress":
            d.rectangle([0, wy, W, H], fill=bottom + (255,))
        if o["top"] == "dress":
            d.rectangle([0, wy - H * 0.02, W, wy + H * 0.02], fill=acc + (255,))
        kind = o["top"]
        # necklines
        if kind in ("tshirt", "hoodie"):
            d.ellipse([fx - W * 0.06, -H * 0.08, fx + W * 0.06, H * 0.09], fill=skin + (255,))
            d.arc([fx - W * 0.06, -H * 0.08, fx + W * 0.06, H * 0.09], 0, 180, fill=shade(top, 0.7) + (255,), width=H // 60)
        elif kind in ("shirt", "blazer"):
            d.polygon([(fx - W * 0.05, 0), (fx + W * 0.05, 0), (fx, H * 0.16)], fill=skin + (255,))
            for sx in (-1, 1):   # collar points
                d.polygon([(fx + sx * W * 0.05, 0), (fx + sx * W * 0.005, H * 0.14), (fx + sx * W * 0.09, H * 0.1), (fx + sx * W * 0.1, 0)],
                          fill=(250, 250, 250, 255), outline=shade(top, 0.6) + (255,))
            for k in range(4):   # buttons
                by = H * (0.22 + 0.12 * k)
                if by < wy - H * 0.04:
                    d.ellipse([fx - W * 0.008, by - W * 0.008, fx + W * 0.008, by + W * 0.008], fill=shade(top, 0.6) + (255,))
            d.line([(fx, H * 0.16), (fx, wy)], fill=shade(top, 0.8) + (255,), width=max(1, W // 400))
        elif kind == "sailor":
            d.polygon([(fx - W * 0.07, 0), (fx + W * 0.07, 0), (fx, H * 0.3)], fill=skin + (255,))
            for sx in (-1, 1):
                d.polygon([(fx + sx * W * 0.07, 0), (fx + sx * W * 0.14, 0), (fx, H * 0.38), (fx, H * 0.3)], fill=acc + (255,))
                d.line([(fx + sx * W * 0.12, 0), (fx + sx * W * 0.008, H * 0.35)], fill=(255, 255, 255, 255), width=H // 70)
            # big square flap on the back with two white stripes
            d.rectangle([bx - W * 0.16, 0, bx + W * 0.16, H * 0.34], fill=acc + (255,))
            for k in (0.02, 0.045):
                d.rectangle([bx - W * (0.16 - k), H * k * 1.6, bx + W * (0.16 - k), H * (0.34 - k * 1.6)],
                            outline=(255, 255, 255, 255), width=H // 90)
        elif kind == "dress":
            d.polygon([(fx - W * 0.08, 0), (fx + W * 0.08, 0), (fx + W * 0.05, H * 0.12), (fx - W * 0.05, H * 0.12)], fill=skin + (255,))
            d.line([(fx - W * 0.08, 0), (fx - W * 0.05, H * 0.12), (fx + W * 0.05, H * 0.12), (fx + W * 0.08, 0)], fill=acc + (255,), width=H // 50)
            # back: lacing / zip line
            d.line([(bx, 0), (bx, wy)], fill=shade(top, 0.6) + (255,), width=H // 80)
            for k in range(6):
                y = H * 0.08 + k * (wy - H * 0.1) / 6
                d.line([(bx - W * 0.02, y), (bx + W * 0.02, y + H * 0.04)], fill=acc + (255,), width=H // 100)
        if kind == "hoodie":   # kangaroo pocket front, drawstrings
            d.rounded_rectangle([fx - W * 0.1, wy - H * 0.22, fx + W * 0.1, wy - H * 0.02], radius=H // 20, fill=shade(top, 0.88) + (255,))
            for sx in (-1, 1):
                d.line([(fx + sx * W * 0.025, H * 0.06), (fx + sx * W * 0.03, H * 0.3)], fill=(245, 245, 245, 255), width=H // 70)
        if o["back_print"] != "none":
            r = H * 0.13
            cy = H * 0.5 if kind != "sailor" else H * 0.52
            if o["back_print"] == "stripes":
                for k in range(3):
                    y = H * (0.36 + 0.08 * k)
                    d.rectangle([bx - W * 0.2, y, bx + W * 0.2, y + H * 0.035], fill=tuple(o["print_colour"]) + (255,))
            else:
                _print_shape(d, o["back_print"], bx, min(cy, wy - r * 1.1), r, o["print_colour"])
        if o["belt"] and o["bottom"] != "skirt" or (o["belt"] and o["top"] != "dress"):
            d.rectangle([0, wy - H * 0.015, W, wy + H * 0.045], fill=(50, 36, 30, 255))
            d.rectangle([fx - W * 0.018, wy - H * 0.02, fx + W * 0.018, wy + H * 0.05], outline=(220, 190, 80, 255), width=H // 90)

    atlas.paint("torso", fn, flip_v=True)   # the torso tube runs bottom -> top


def paint_limbs(atlas: Atlas, p: dict, sleeve_v: float) -> None:
    o, skin = p["outfit"], tuple(p["body"]["skin"])
    sleeve_col = tuple(o["jacket_colour"] if o["jacket"] else o["top_colour"])

    def arm(d, W, H, img):
        d.rectangle([0, 0, W, H], fill=skin + (255,))
        if sleeve_v > 0:
            d.rectangle([0, 0, W, sleeve_v * H], fill=sleeve_col + (255,))
            d.rectangle([0, sleeve_v * H - H * 0.05, W, sleeve_v * H], fill=shade(sleeve_col, 0.8) + (255,))
            if o["top"] == "sailor" and not o["jacket"]:
                d.rectangle([0, sleeve_v * H - H * 0.12, W, sleeve_v * H - H * 0.05], fill=tuple(o["accent"]) + (255,))
        if o["gloves"]:
            d.rectangle([0, H * 0.8, W, H], fill=(250, 250, 250, 255))

    atlas.paint("arm", arm)

    def leg(d, W, H, img):
        d.rectangle([0, 0, W, H], fill=skin + (255,))
        lw = o["legwear"]
        lc = tuple(o["legwear_colour"])
        start = {"none": None, "socks": 0.88, "knee": 0.5, "thigh": 0.22, "tights": 0.0}[lw]
        if start is not None:
            d.rectangle([0, start * H, W, H], fill=lc + (255,))
            if lw in ("knee", "thigh"):
                d.rectangle([0, start * H, W, start * H + H * 0.04], fill=shade(lc, 0.8) + (255,))
        if o["bottom"] == "trousers":
            d.rectangle([0, 0, W, H], fill=tuple(o["bottom_colour"]) + (255,))
            d.line([(W * 0.5, 0), (W * 0.5, H)], fill=shade(o["bottom_colour"], 0.8) + (255,), width=max(1, W // 100))
            d.line([(0, 0), (0, H)], fill=shade(o["bottom_colour"], 0.8) + (255,), width=max(1, W // 100))
        elif o["bottom"] == "shorts":
            d.rectangle([0, 0, W, H * 0.22], fill=tuple(o["bottom_colour"]) + (255,))
            d.rectangle([0, H * 0.2, W, H * 0.23], fill=shade(o["bottom_colour"], 0.75) + (255,))

    atlas.paint("leg", leg)


def paint_skirt(atlas: Atlas, p: dict, n_pleats: int) -> None:
    o = p["outfit"]
    c = tuple(o["bottom_colour"])
    style = o["skirt_style"]

    def fn(d, W, H, img):
        d.rectangle([0, 0, W, H], fill=c + (255,))
        if style == "plaid":
            acc = shade(c, 0.65)
            for k in range(n_pleats * 2):
                x = (k + 0.5) * W / (n_pleats * 2)
                d.rectangle([x - W * 0.008, 0, x + W * 0.008, H], fill=acc + (255,))
            for k in range(4):
                y = (k + 0.5) * H / 4
                d.rectangle([0, y - H * 0.03, W, y + H * 0.03], fill=acc + (255,))
            for k in range(n_pleats * 2):
                x = k * W / (n_pleats * 2)
                d.line([(x, 0), (x, H)], fill=(255, 255, 255, 255), width=max(1, W // 500))
        if style in ("pleated", "plaid"):
            for k in range(n_pleats):
                x = (k + 0.5) * W / n_pleats
                d.line([(x, H * 0.1), (x, H)], fill=shade(c, 0.7) + (255,), width=max(1, W // 300))
        if o["top"] == "sailor" or style == "pleated":
            d.rectangle([0, H * 0.86, W, H * 0.9], fill=(255, 255, 255, 255))
        d.rectangle([0, 0, W, H * 0.06], fill=shade(c, 0.8) + (255,))   # waistband

    atlas.paint("skirt", fn)


def paint_hair(atlas: Atlas, p: dict, rng) -> None:
    c = tuple(p["hair"]["colour"])
    tips = tuple(p["hair"]["tips"]) if p["hair"].get("tips") else None

    def strand(d, W, H, img):
        for k in range(32):      # root slightly darker, highlight band a third of the way down
            t = k / 31
            f = 0.82 + 0.18 * t
            if 0.25 < t < 0.4:
                f = 1.12
            base = mix(c, tips, np.clip((t - 0.55) / 0.35, 0, 1)) if tips else c
            d.rectangle([0, t * H, W, (t + 1 / 31) * H + 1], fill=shade(base, f) + (255,))
        dark = shade(c, 0.74) + (255,)
        for x in (0.0, 0.5, 1.0):    # strand flanks: reads as separate locks
            d.rectangle([(x - 0.035) * W, 0, (x + 0.035) * W, H], fill=dark)
        d.rectangle([0.23 * W, 0.05 * H, 0.25 * W, 0.6 * H], fill=shade(c, 0.88) + (255,))

    def cap(d, W, H, img):
        d.rectangle([0, 0, W, H], fill=c + (255,))
        d.rectangle([0, 0.42 * H, W, 0.52 * H], fill=shade(mix(c, (255, 255, 255), 0.3), 1.05) + (255,))   # angel ring
        xs = rng.uniform(0, 1, 26)
        for x in xs:
            d.line([(x * W, 0.1 * H), (x * W + rng.normal(0, 6), H)], fill=shade(c, 0.7) + (255,), width=max(2, W // 120))
        d.rectangle([0, 0.9 * H, W, H], fill=shade(c, 0.8) + (255,))

    atlas.paint("strand", strand)
    atlas.paint("cap", cap)


def paint_extras(atlas: Atlas, p: dict) -> None:
    o, a = p["outfit"], p["accessories"]
    hair = tuple(p["hair"]["colour"])

    def lace(d, W, H, img):
        d.rectangle([0, 0, W, H], fill=(0, 0, 0, 0))
        d.rectangle([0, 0, W, H * 0.45], fill=(252, 252, 252, 255))
        n = 16
        for k in range(n):
            x0, x1 = k * W / n, (k + 1) * W / n
            d.ellipse([x0, H * 0.1, x1, H * 0.95], fill=(252, 252, 252, 255))
            cx = (x0 + x1) / 2
            d.ellipse([cx - W / n * 0.15, H * 0.45, cx + W / n * 0.15, H * 0.65], fill=(0, 0, 0, 0))

    def glasses(d, W, H, img):
        d.rectangle([0, 0, W, H], fill=(0, 0, 0, 0))
        col = (60, 40, 50, 255) if o["accent"][0] < 128 else (170, 40, 50, 255)
        for cx in (0.29, 0.71):
            d.rounded_rectangle([(cx - 0.19) * W, 0.2 * H, (cx + 0.19) * W, 0.8 * H], radius=H // 6, outline=col, width=H // 14)
        d.line([(0.48 * W, 0.35 * H), (0.52 * W, 0.35 * H)], fill=col, width=H // 16)

    def jacket(d, W, H, img):
        jc = tuple(o["jacket_colour"])
        d.rectangle([0, 0, W, H], fill=jc + (255,))
        for x in (0.0, 1.0):     # lapel edges (the tube is open at the front: u = 0 and 1 are its edges)
            d.rectangle([(x - 0.04) * W, 0, (x + 0.04) * W, H], fill=shade(jc, 0.75) + (255,))
        d.rectangle([0, 0.9 * H, W, H], fill=shade(jc, 0.8) + (255,))
        d.rectangle([0.48 * W, 0.3 * H, 0.52 * W, H], fill=shade(jc, 0.85) + (255,))   # back seam

    def backpack(d, W, H, img):
        bc = tuple(a["backpack_colour"])
        d.rectangle([0, 0, W, H], fill=bc + (255,))
        d.rectangle([0.55 * W, 0, 0.95 * W, 0.55 * H], fill=shade(bc, 0.8) + (255,))    # flap on the back face
        d.rectangle([0.73 * W, 0.45 * H, 0.77 * W, 0.65 * H], fill=(220, 190, 80, 255))

    def ear(d, W, H, img):
        d.rectangle([0, 0, W, H], fill=hair + (255,))
        d.polygon([(0.1 * W, H), (0.25 * W, 0.2 * H), (0.4 * W, H)], fill=(250, 170, 180, 255))

    def hat(d, W, H, img):
        hc = tuple(a["hat_colour"])
        d.rectangle([0, 0, W, H], fill=hc + (255,))
        d.rectangle([0, 0.75 * H, W, 0.9 * H], fill=tuple(o["accent"]) + (255,))

    atlas.paint("lace", lace, background=(0, 0, 0, 0))
    atlas.paint("glasses", glasses, background=(0, 0, 0, 0))
    atlas.paint("jacket", jacket)
    atlas.paint("backpack", backpack)
    atlas.paint("ear", ear)
    atlas.paint("hat", hat)

"""Random character parameters: everything the builder varies, drawn from one seeded generator.

The result is a plain JSON-able dict (stored in the GLB's ``scene.extras``),
so a character can be described, filtered and rebuilt from its parameters.
"""
from __future__ import annotations

import colorsys

import numpy as np

HAIR_COLOURS = {  # name: (r, g, b) in 0..255, anime-typical
    "black": (40, 38, 52), "dark_brown": (78, 52, 40), "brown": (128, 86, 56),
    "blonde": (236, 206, 120), "platinum": (232, 226, 214), "silver": (188, 192, 206),
    "pink": (244, 150, 186), "red": (196, 52, 58), "orange": (236, 128, 60),
    "blue": (70, 110, 210), "light_blue": (134, 196, 240), "purple": (132, 92, 190),
    "lavender": (190, 168, 230), "green": (80, 160, 110), "teal": (60, 160, 170),
    "white": (244, 244, 248),
}
IRIS_COLOURS = {
    "blue": (50, 110, 220), "sky": (80, 170, 240), "green": (40, 160, 90), "emerald": (20, 130, 110),
    "red": (200, 40, 50), "crimson": (150, 20, 60), "purple": (140, 70, 200), "violet": (180, 110, 230),
    "gold": (220, 160, 30), "amber": (200, 110, 30), "brown": (120, 70, 40), "pink": (230, 100, 160),
    "grey": (120, 130, 150),
}
SKIN_TONES = [(255, 236, 224), (252, 226, 208), (246, 214, 190), (236, 196, 166),
              (222, 176, 140), (196, 144, 108), (160, 110, 80), (120, 82, 60)]


def _hsv(h, s, v):
    return tuple(int(round(255 * c)) for c in colorsys.hsv_to_rgb(h % 1.0, s, v))


def _cloth_colour(rng) -> tuple:
    kind = rng.random()
    if kind < 0.2:   # near-white / black / grey basics
        g = float(rng.choice([0.12, 0.2, 0.85, 0.95, 0.6]))
        return _hsv(rng.random(), 0.05, g)
    if kind < 0.35:  # navy / dark uniform colours
        return _hsv(rng.uniform(0.55, 0.7), rng.uniform(0.4, 0.7), rng.uniform(0.2, 0.4))
    return _hsv(rng.random(), rng.uniform(0.35, 0.85), rng.uniform(0.55, 0.95))


def _pick(rng, options, p=None):
    i = rng.choice(len(options), p=None if p is None else np.asarray(p, float) / np.sum(p))
    return options[int(i)]


def sample_params(rng: np.random.Generator) -> dict:
    m = float(rng.uniform(0, 1) ** 0.9)                      # maturity: 0 chibi .. 1 adult
    height = float(np.clip(0.9 + 0.9 * m + rng.normal(0, 0.04), 0.9, 1.8))
    heads = float(np.clip(2.4 + 4.4 * m + rng.normal(0, 0.25), 2.2, 7.4))
    fem = float(rng.uniform(0, 1) < 0.7)
    body = {
        "maturity": round(m, 4), "height": round(height, 4), "heads_tall": round(heads, 3),
        "feminine": fem, "build": round(float(rng.uniform(0.85, 1.15)), 3),
        "head_width": round(float(rng.uniform(0.40, 0.46)), 3),
        "skin": list(SKIN_TONES[int(rng.choice(len(SKIN_TONES), p=[.2, .2, .18, .14, .1, .08, .06, .04]))]),
    }
    hair_name = str(rng.choice(list(HAIR_COLOURS)))
    length = _pick(rng, ["short", "bob", "medium", "long", "very_long"], [2, 2, 3, 3, 1.5])
    tail = _pick(rng, ["none", "ponytail", "twintails", "side_tail", "bun"], [4, 2.5, 2, 0.8, 0.8])
    hair = {
        "colour_name": hair_name, "colour": list(HAIR_COLOURS[hair_name]),
        "length": length, "tail": tail,
        "bangs": _pick(rng, ["blunt", "swept", "parted", "spiky", "open"], [3, 2.5, 2, 1, 0.8]),
        "spiky": bool(rng.random() < (0.35 if fem < 0.5 else 0.08)),
        "ahoge": bool(rng.random() < 0.35),
        "side_locks": bool(rng.random() < 0.7),
        "volume": round(float(rng.uniform(1.05, 1.14)), 3),
        "strands": int(rng.integers(11, 17)),
        "tail_length": round(float(rng.uniform(0.35, 0.9)), 3),
    }
    if hair["spiky"]:
        hair["length"] = _pick(rng, ["short", "bob", "medium"])
    iris = str(rng.choice(list(IRIS_COLOURS)))
    face = {
        "iris_name": iris, "iris": list(IRIS_COLOURS[iris]),
        "eye_size": round(float(rng.uniform(0.85, 1.2) * (1.12 - 0.18 * m)), 3),
        "eye_tilt": round(float(np.clip(rng.normal(0, 0.05), -0.1, 0.1)), 3),            # + tsurime, - tareme
        "eye_spacing": round(float(rng.uniform(0.34, 0.42)), 3),
        "mouth": _pick(rng, ["smile", "open", "cat", "small", "grin"], [3, 2, 1, 2, 1]),
        "closed_eyes": bool(rng.random() < 0.06),
        "blush": bool(rng.random() < 0.5),
        "brow_colour": [int(c * 0.6) for c in HAIR_COLOURS[hair_name]],
    }
    top_kind = _pick(rng, ["shirt", "sailor", "hoodie", "tshirt", "dress", "blazer"], [2, 2, 1.5, 2, 1.5, 1.5])
    bottom = _pick(rng, ["skirt", "trousers", "shorts"], [6, 2, 2] if fem else [1, 6, 3])
    if top_kind == "dress":
        bottom = "skirt"
    top_colour = list(_cloth_colour(rng))
    outfit = {
        "top": top_kind, "top_colour": top_colour, "accent": list(_cloth_colour(rng)),
        "sleeve": _pick(rng, ["none", "short", "elbow", "long"], [1, 3, 1, 4]),
        "jacket": bool(top_kind in ("blazer",) or rng.random() < 0.15),
        "jacket_colour": list(_cloth_colour(rng)),
        "bottom": bottom, "bottom_colour": list(top_colour if top_kind == "dress" else _cloth_colour(rng)),
        "skirt_length": round(float(rng.uniform(0.25, 0.75)), 3),
        "skirt_style": _pick(rng, ["pleated", "plaid", "flared", "frilled"]),
        "legwear": _pick(rng, ["none", "socks", "knee", "thigh", "tights"], [2, 2, 2, 2, 1]),
        "legwear_colour": list(_pick(rng, [(250, 250, 250), (30, 30, 36), (60, 60, 90), _cloth_colour(rng)])),
        "shoes": _pick(rng, ["shoes", "boots", "sneakers"]),
        "shoe_colour": list(_pick(rng, [(40, 30, 30), (90, 50, 30), (240, 240, 240), _cloth_colour(rng)])),
        "back_print": _pick(rng, ["none", "star", "heart", "circle", "stripes", "number", "cross"], [1, 2, 2, 1, 1, 2, 1]),
        "print_colour": list(_cloth_colour(rng)),
        "belt": bool(rng.random() < 0.4),
        "neck_ribbon": bool(top_kind in ("sailor", "shirt", "blazer") and rng.random() < 0.8),
        "gloves": bool(rng.random() < 0.1),
    }
    acc = {
        "hat": _pick(rng, ["none", "beret", "witch", "cap", "beanie"], [10, 1, 0.8, 1, 0.8]),
        "hat_colour": list(_cloth_colour(rng)),
        "cat_ears": bool(rng.random() < 0.15),
        "glasses": bool(rng.random() < 0.15),
        "backpack": bool(rng.random() < 0.25),
        "backpack_colour": list(_cloth_colour(rng)),
        "hair_bow": bool(rng.random() < 0.35),
        "bow_colour": list(_cloth_colour(rng)),
        "tail": bool(rng.random() < 0.08),
    }
    # two-tone hair: tips fade into a second colour
    hair["tips"] = list(HAIR_COLOURS[str(rng.choice(list(HAIR_COLOURS)))]) if rng.random() < 0.15 else None
    if acc["hat"] != "none":
        acc["cat_ears"] = False
        hair["ahoge"] = False
    return {"body": body, "hair": hair, "face": face, "outfit": outfit, "accessories": acc}


# near-black, like the contour lines of the line renders (training.data.raster.LINE_COLOR is (20, 15, 18)): the
# hard case of a line remover, which must keep dark regions that are not lines
def _dark(rng) -> list:
    return list(_hsv(rng.random(), float(rng.uniform(0.0, 0.4)), float(rng.uniform(0.07, 0.16))))


def apply_dark_parts(params: dict, rng: np.random.Generator) -> dict:
    """Give a character dark parts: always a black hair bow and (with a shirt, sailor top or blazer) a black
    neck ribbon; often a black top or dress, black hair, black legwear and shoes.  ``rng`` is a stream of
    its own, so the rest of the character is the one without dark parts.  Records ``dark_parts``."""
    o, a, h = params["outfit"], params["accessories"], params["hair"]
    parts = ["hair_bow"]
    a["hair_bow"], a["bow_colour"] = True, _dark(rng)
    if o["top"] in ("sailor", "shirt", "blazer"):
        o["neck_ribbon"], o["accent"] = True, _dark(rng)
        parts.append("neck_ribbon")
    if rng.random() < 0.6:
        o["top_colour"] = _dark(rng)
        if o["top"] == "dress":
            o["bottom_colour"] = list(o["top_colour"])
        parts.append("top")
    if rng.random() < 0.4:
        h["colour_name"], h["colour"], h["tips"] = "black", _dark(rng), None
        params["face"]["brow_colour"] = [int(c * 0.6) for c in h["colour"]]
        parts.append("hair")
    if rng.random() < 0.5:
        o["legwear"] = o["legwear"] if o["legwear"] != "none" else "tights"
        o["legwear_colour"], o["shoe_colour"] = _dark(rng), _dark(rng)
        parts.append("legwear")
    params["dark_parts"] = parts
    return params

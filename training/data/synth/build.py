"""Assemble a synthetic anime character from its parameters: body, face, hair, clothes, accessories.

Canonical frame (docs/DESIGN.md): metres, Y up, faces +Z, feet at y = 0, T-pose
with the arms along +-X (character's left = +X).  Each part is textured from the
shared atlas (``texture.py``) and skinned to the humanoid skeleton (``skeleton.py``).
"""
from __future__ import annotations

import numpy as np

from training.data.synth import texture as tx
from training.data.synth.geometry import Part, card, ellipsoid, smooth_path, sweep
from training.data.synth.skeleton import chain, joint_positions, rigid


def body_dims(p: dict) -> dict:
    """Heights, widths and joint locations (metres) from the body parameters."""
    b = p["body"]
    m, H = b["maturity"], b["height"]
    hh = H / b["heads_tall"]                       # head height, chin to crown
    build = b["build"]
    d = {"H": H, "hh": hh}
    d["Ry"] = hh / 2
    d["Rx"] = hh * b["head_width"]
    d["Rz"] = d["Rx"] * 1.02
    d["chin_y"] = H - hh
    d["head_cy"] = H - d["Ry"]
    d["head_cz"] = 0.0
    neck_len = hh * (0.10 + 0.22 * m)
    d["shoulder_y"] = d["chin_y"] - neck_len
    B = d["shoulder_y"]
    leg = B * (0.50 + 0.10 * m)
    d["crotch_y"] = leg
    d["torso_len"] = B - leg
    d["hip_y"] = leg + 0.12 * d["torso_len"]
    d["waist_y"] = leg + 0.40 * d["torso_len"]
    d["chest_y"] = leg + 0.70 * d["torso_len"]
    d["neck_r"] = hh * (0.11 + 0.02 * m) * build ** 0.5
    scale = hh * (0.30 + 0.30 * m) * build                 # body width unit
    fem = b["feminine"]
    d["chest_rx"] = scale * (0.95 if fem else 1.05)
    d["chest_rz"] = d["chest_rx"] * (0.62 + 0.08 * fem * m)
    d["waist_rx"] = d["chest_rx"] * (0.78 if fem else 0.9)
    d["waist_rz"] = d["chest_rz"] * 0.85
    d["hip_rx"] = d["chest_rx"] * (1.02 if fem else 0.95)
    d["hip_rz"] = d["chest_rz"] * 1.0
    d["shoulder_rx"] = d["chest_rx"] * (1.05 if fem else 1.18)
    d["arm_r"] = (0.018 + 0.018 * m) * build * H / (0.9 + 0.9 * m)
    d["arm_y"] = B - d["arm_r"] * 1.2
    d["shoulder_x"] = d["shoulder_rx"] - d["arm_r"] * 0.6
    arm_len = B * (0.40 + 0.05 * m)
    d["elbow_x"] = d["shoulder_x"] + arm_len * 0.52
    d["wrist_x"] = d["shoulder_x"] + arm_len
    d["hand_len"] = arm_len * 0.26 * (1.0 - 0.2 * m)
    d["leg_r"] = (0.032 + 0.02 * m) * build
    d["hip_x"] = d["hip_rx"] * 0.55
    d["leg_top_y"] = leg + 0.02
    d["foot_h"] = 0.035 + 0.02 * m
    d["ankle_y"] = d["foot_h"] * 1.2
    d["knee_y"] = d["ankle_y"] + (d["leg_top_y"] - d["ankle_y"]) * 0.48
    d["foot_len"] = 0.1 + 0.12 * m
    d["head_bone_y"] = d["chin_y"] + 0.22 * hh
    d["head_bone_z"] = -0.05 * d["Rz"]
    return d


def _smooth_interp(t, ts, vals):
    """Piecewise-linear profile through key rings, lightly smoothed (ends kept)."""
    out = np.interp(t, ts, vals)
    for _ in range(2):
        out[1:-1] = 0.25 * out[:-2] + 0.5 * out[1:-1] + 0.25 * out[2:]
    return out


def head_point(d, theta, a, s=1.0):
    """Point on the (unjawed) head ellipsoid scaled by ``s``; theta from the top, a = 0 at the front (+Z)."""
    theta, a = np.asarray(theta, float), np.asarray(a, float)
    return np.stack([s * d["Rx"] * np.sin(theta) * np.sin(a),
                     d["head_cy"] + s * d["Ry"] * np.cos(theta),
                     d["head_cz"] + s * d["Rz"] * np.sin(theta) * np.cos(a)], -1)


class Builder:
    def __init__(self, p: dict, rng: np.random.Generator):
        self.p, self.rng = p, rng
        self.d = body_dims(p)
        self.atlas = tx.Atlas()
        self.parts: list[Part] = []

    # ---- helpers
    def add(self, part: Part, tex, rig, material: int = 0) -> Part:
        """``tex``: tile name or an RGB swatch; ``rig``: bone name or (joints, weights)."""
        if isinstance(tex, str):
            part.uv = tx.TILES[tex].map(part.st)
        else:
            part.uv = self.atlas.swatch(tex).centre(len(part.pos))
        part.joints, part.weights = rigid(len(part.pos), rig) if isinstance(rig, str) else rig
        part.material = material
        self.parts.append(part)
        return part

    def hair_floor_z(self, y):
        """Hanging hair stays behind this plane below the chin (clears torso, arms, backpack)."""
        d = self.d
        z = -(max(d["chest_rz"], d["hip_rz"]) * 1.05 + 0.012)
        if self.p["accessories"]["backpack"]:
            z -= d["chest_rz"] * 0.9
        return np.where(y < d["chin_y"], z, np.inf)

    # ---- body
    def head(self):
        d, p = self.d, self.p
        skin = p["body"]["skin"]
        for half, arc in (("front", (0.0, 0.5)), ("back", (0.5, 1.0))):
            e = ellipsoid(f"head_{half}", (0, d["head_cy"], d["head_cz"]), (d["Ry"], d["Rz"], d["Rx"]), k=18, m=14, arc=arc)
            y = e.pos[:, 1] - d["head_cy"]
            below = np.clip(-y / d["Ry"], 0, 1)
            e.pos[:, 0] *= 1 - 0.34 * below ** 1.6          # narrow jaw, pointed chin
            e.pos[:, 2] = d["head_cz"] + (e.pos[:, 2] - d["head_cz"]) * (1 - 0.18 * below ** 2)
            if half == "front":
                e.st = np.stack([(e.pos[:, 0] / d["Rx"] + 1) / 2, (1 - y / d["Ry"]) / 2], -1)
                self.add(e, "face", "head")
            else:
                self.add(e, skin, "head")
        for sx in (-1, 1):
            ear = ellipsoid("ear", (sx * d["Rx"] * 0.93, d["head_cy"] - 0.12 * d["Ry"], -0.05 * d["Rz"]),
                            (0.2 * d["Ry"], 0.12 * d["Rx"], 0.06 * d["Rx"]), k=6, m=8)
            self.add(ear, tx.shade(skin, 0.93), "head")
        tx.paint_face(self.atlas, p, None)

    def torso(self):
        d, p = self.d, self.p
        ts = np.array([0.0, 0.12, 0.4, 0.72, 0.9, 1.0])
        ys = d["crotch_y"] - 0.02 + ts * (d["shoulder_y"] + 0.02 - d["crotch_y"] + 0.02)
        rx = np.array([d["hip_rx"] * 0.75, d["hip_rx"], d["waist_rx"], d["chest_rx"], d["shoulder_rx"], d["neck_r"] * 1.25])
        rz = np.array([d["hip_rz"] * 0.7, d["hip_rz"], d["waist_rz"], d["chest_rz"], d["chest_rz"] * 0.8, d["neck_r"] * 1.15])
        bust = 0.12 * d["chest_rz"] * p["body"]["feminine"] * p["body"]["maturity"]
        zc = np.array([0, 0, 0, bust, 0, 0])
        t = np.linspace(0, 1, 20)
        path = np.stack([np.zeros_like(t), np.interp(t, ts, ys), _smooth_interp(t, ts, zc)], -1)
        R = sweep("torso", path, _smooth_interp(t, ts, rz), _smooth_interp(t, ts, rx), m=24, caps=True)
        y = R.pos[:, 1]
        rig = chain(y, [(d["hip_y"], "hips"), (d["waist_y"], "spine"), (d["chest_y"] - 0.01, "chest"),
                        (d["shoulder_y"], "chest"), (d["shoulder_y"] + 0.02, "neck")])
        self.add(R, "torso", rig)
        waist_v = 1 - 0.4
        tx.paint_torso(self.atlas, p, waist_v, self.rng)
        self.torso_profile = (ts, ys, rx, rz)
        # neck
        n = sweep("neck", [(0, d["shoulder_y"] - 0.01, 0), (0, d["chin_y"] + 0.3 * d["hh"], -0.1 * d["Rz"])],
                  d["neck_r"], d["neck_r"], m=12)
        self.add(n, tx.shade(p["body"]["skin"], 0.9), chain(n.pos[:, 1], [(d["shoulder_y"], "neck"), (d["chin_y"] + 0.1 * d["hh"], "head")]))
        if p["outfit"]["jacket"]:
            J = sweep("jacket", path[2:], _smooth_interp(t, ts, rz)[2:] * 1.1 + 0.004,
                      _smooth_interp(t, ts, rx)[2:] * 1.08 + 0.004, m=24, arc=(0.25 + 0.07, 1.25 - 0.07))
            self.add(J, "jacket", chain(J.pos[:, 1], [(d["hip_y"], "hips"), (d["waist_y"], "spine"), (d["chest_y"], "chest")]))

    def limbs(self):
        d, p = self.d, self.p
        o = p["outfit"]
        skin = p["body"]["skin"]
        sleeve_v = {"none": 0.0, "short": 0.3, "elbow": 0.55, "long": 0.97}[o["sleeve"]]
        if o["jacket"] or o["top"] in ("hoodie", "blazer"):
            sleeve_v = 0.97
        tx.paint_limbs(self.atlas, p, sleeve_v)
        r = d["arm_r"]
        for side, sx in (("left", 1), ("right", -1)):
            xs = np.array([d["shoulder_x"] - r * 1.2, d["shoulder_x"], d["elbow_x"], d["wrist_x"]])
            rr = np.array([r * 1.05, r, r * 0.82, r * 0.62])
            t = np.linspace(0, 1, 12)
            xi = np.interp(t, [0, 0.1, 0.55, 1], xs)
            path = np.stack([sx * xi, np.full_like(t, d["arm_y"]), np.zeros_like(t)], -1)
            radius = np.interp(xi, xs, rr)
            A = sweep(f"{side}_arm", path, radius, radius, m=12, front=(0, 1, 0))
            s = np.abs(A.pos[:, 0])
            bl = r * 1.2
            rig = chain(s, [(d["shoulder_x"] - bl, "chest"), (d["shoulder_x"] + bl * 0.5, f"{side}UpperArm"),
                            (d["elbow_x"] - bl * 0.7, f"{side}UpperArm"), (d["elbow_x"] + bl * 0.7, f"{side}LowerArm"),
                            (d["wrist_x"] - bl * 0.3, f"{side}LowerArm"), (d["wrist_x"] + bl * 0.3, f"{side}Hand")])
            self.add(A, "arm", rig)
            hand = ellipsoid(f"{side}_hand", (sx * (d["wrist_x"] + d["hand_len"] * 0.42), d["arm_y"], 0),
                             (d["hand_len"] * 0.55, r * 0.55, r * 0.95), axis=(sx, 0, 0), front=(0, 1, 0), k=8, m=10)
            self.add(hand, (250, 250, 250) if o["gloves"] else skin, f"{side}Hand")
            # thumb
            th = ellipsoid("thumb", (sx * (d["wrist_x"] + d["hand_len"] * 0.15), d["arm_y"], r * 0.8),
                           (d["hand_len"] * 0.3, r * 0.3, r * 0.3), axis=(sx, 0, 0.8), k=6, m=6)
            self.add(th, (250, 250, 250) if o["gloves"] else skin, f"{side}Hand")
        # legs
        lr = d["leg_r"]
        for side, sx in (("left", 1), ("right", -1)):
            ys = np.array([d["leg_top_y"] + 0.04, d["leg_top_y"], d["knee_y"], (d["knee_y"] + d["ankle_y"]) / 2, d["ankle_y"] - 0.01])
            rr = np.array([lr * 1.05, lr, lr * 0.7, lr * 0.78, lr * 0.48])
            t = np.linspace(0, 1, 14)
            yi = np.interp(t, [0, 0.08, 0.5, 0.75, 1], ys)
            path = np.stack([np.full_like(t, sx * d["hip_x"]), yi, np.zeros_like(t)], -1)
            radius = np.interp(-yi, -ys, rr)
            L = sweep(f"{side}_leg", path, radius, radius, m=12)
            y = L.pos[:, 1]
            bl = lr
            rig = chain(y, [(d["ankle_y"] - 0.01, f"{side}Foot"), (d["ankle_y"] + bl * 0.4, f"{side}LowerLeg"),
                            (d["knee_y"] - bl * 0.6, f"{side}LowerLeg"), (d["knee_y"] + bl * 0.6, f"{side}UpperLeg"),
                            (d["leg_top_y"], f"{side}UpperLeg"), (d["leg_top_y"] + 0.04, "hips")])
            self.add(L, "leg", rig)
            shoe_col = o["shoe_colour"]
            fh = d["foot_h"]
            foot = ellipsoid(f"{side}_shoe", (sx * d["hip_x"], fh * 0.75, d["foot_len"] * 0.25),
                             (d["foot_len"] / 2, fh * 0.95, lr * 0.62), axis=(0, 0, 1), front=(0, 1, 0), k=10, m=12)
            foot.pos[:, 1] = np.maximum(foot.pos[:, 1], 0.0)
            self.add(foot, shoe_col, f"{side}Foot")
            if o["shoes"] == "sneakers":
                sole = ellipsoid("sole", (sx * d["hip_x"], fh * 0.2, d["foot_len"] * 0.25),
                                 (d["foot_len"] / 2 * 1.04, fh * 0.3, lr * 0.66), axis=(0, 0, 1), front=(0, 1, 0), k=8, m=12)
                sole.pos[:, 1] = np.maximum(sole.pos[:, 1], 0.0)
                self.add(sole, (245, 245, 245), f"{side}Foot")
            if o["shoes"] == "boots":
                top = d["ankle_y"] + (d["knee_y"] - d["ankle_y"]) * 0.75
                bt = np.linspace(0, 1, 6)
                bpath = np.stack([np.full_like(bt, sx * d["hip_x"]), d["ankle_y"] * 0.6 + bt * (top - d["ankle_y"] * 0.6), np.zeros_like(bt)], -1)
                brad = np.interp(-bpath[:, 1], -ys, rr) * 1.12 + 0.004
                boot = sweep("boot", bpath, brad, brad, m=12)
                self.add(boot, shoe_col, chain(boot.pos[:, 1], [(d["ankle_y"], f"{side}Foot"), (d["ankle_y"] + 0.02, f"{side}LowerLeg")]))

    def skirt(self):
        d, p = self.d, self.p
        o = p["outfit"]
        if o["bottom"] != "skirt":
            return
        top_y = d["waist_y"] + 0.02 * d["torso_len"]
        bottom_y = d["crotch_y"] - o["skirt_length"] * (d["crotch_y"] - d["knee_y"]) * 1.1 - 0.02
        n_pleats = 12 if o["skirt_style"] != "flared" else 8
        hem_rx = max(d["hip_rx"] * (1.25 + 0.3 * o["skirt_length"]), d["hip_x"] + d["leg_r"] * 1.3)
        hem_rz = max(d["hip_rz"] * (1.35 + 0.3 * o["skirt_length"]), d["leg_r"] * 1.5)
        t = np.linspace(0, 1, 8)
        path = np.stack([np.zeros_like(t), top_y + t * (bottom_y - top_y), np.zeros_like(t)], -1)
        rx = d["waist_rx"] * 1.04 + (hem_rx - d["waist_rx"]) * (1 - (1 - t) ** 1.6)
        rx = np.maximum(rx, np.interp(t, [0, 0.3, 1], [d["waist_rx"] * 1.04, d["hip_rx"] * 1.08, 0]))
        rz = d["waist_rz"] * 1.06 + (hem_rz - d["waist_rz"]) * (1 - (1 - t) ** 1.6)
        rz = np.maximum(rz, np.interp(t, [0, 0.3, 1], [d["waist_rz"] * 1.06, d["hip_rz"] * 1.12, 0]))
        if o["skirt_style"] in ("pleated", "plaid"):
            mod = lambda u, v: 1 + 0.045 * v * np.abs(np.sin(np.pi * n_pleats * u))   # noqa: E731
        elif o["skirt_style"] == "flared":
            mod = lambda u, v: 1 + 0.08 * v * np.sin(2 * np.pi * n_pleats * u)        # noqa: E731
        else:
            mod = None
        S = sweep("skirt", path, rz, rx, m=48 if mod else 24, modulate=mod)
        self.add(S, "skirt", "hips")
        tx.paint_skirt(self.atlas, p, n_pleats)
        if o["skirt_style"] == "frilled" or o["top"] == "dress":
            h = 0.06 * (d["crotch_y"] - d["knee_y"]) + 0.02
            fpath = np.stack([np.zeros(3), bottom_y + 0.005 - np.array([0, 0.5, 1]) * h, np.zeros(3)], -1)
            F = sweep("frill", fpath, rz[-1] * np.array([1.0, 1.04, 1.08]), rx[-1] * np.array([1.0, 1.04, 1.08]), m=32)
            self.add(F, "lace", "hips", material=1)

    # ---- hair
    def strand(self, name, path, width, thick, tip=0.3, root_taper=0.0, tex="strand"):
        """A flattened, pointed lock of hair along ``path``; cross-section oriented by the head/body radial."""
        d = self.d
        k = len(path)
        t = np.linspace(0, 1, k)
        prof = np.clip((1 - t) / tip, 0, 1) ** 0.7
        if root_taper:
            prof = prof * (root_taper + (1 - root_taper) * np.clip(t / 0.15, 0, 1))
        c = np.array([0, d["head_cy"], d["head_cz"]])
        radial = path - np.stack([np.zeros(k), np.minimum(path[:, 1], c[1]), np.full(k, c[2])], -1)
        radial[:, 0] *= 1.0
        prof = np.maximum(prof, 0.0)
        S = sweep(name, path, thick * prof + 1e-5, width * prof + 1e-5, front=radial, m=8)
        return self.add(S, tex, "head")

    def hair(self):
        d, p = self.d, self.p
        h = p["hair"]
        rng = self.rng
        vol = h["volume"]
        Rx = d["Rx"]
        tx.paint_hair(self.atlas, p, rng)
        # cap: covers the skull, hairline high at the front, low at the nape
        front_lim = 0.34 * np.pi if h["bangs"] != "open" else 0.30 * np.pi
        back_lim = 0.74 * np.pi if h["length"] != "short" else 0.7 * np.pi
        a = np.linspace(0, 2 * np.pi, 33)
        t = np.linspace(0, 1, 12)
        aa, tt = np.meshgrid(a, t)
        lim = back_lim + (front_lim - back_lim) * ((1 + np.cos(aa)) / 2) ** 1.5
        th = tt * lim
        pos = head_point(d, th, aa, vol).reshape(-1, 3)
        from training.data.synth.geometry import tube_faces
        faces = tube_faces(len(t), len(a) - 1)[:, ::-1]
        cap = Part("hair_cap", pos, faces, np.stack([aa / (2 * np.pi), tt], -1).reshape(-1, 2))
        self.add(cap, "cap", "head")
        hair_thick = 0.05 * Rx
        # bangs
        if h["bangs"] != "open":
            nb = {"blunt": 9, "swept": 8, "parted": 8, "spiky": 6}[h["bangs"]]
            span = np.radians(78)
            for i in range(nb):
                f = (i + 0.5) / nb
                a0 = -span + 2 * span * f
                end = {"blunt": 0.47, "swept": 0.42 + 0.1 * f, "parted": 0.5 - 0.08 * np.cos(np.pi * (f - 0.5)) ** 8,
                       "spiky": 0.45 + 0.05 * (i % 2)}[h["bangs"]] * np.pi
                end += rng.normal(0, 0.015) * np.pi
                if abs(a0) > np.radians(55):
                    end += 0.04 * np.pi             # locks at the temples run longer
                drift = {"swept": 0.35, "parted": 0.25 * np.sign(a0) if abs(a0) > 0.05 else 0.0}.get(h["bangs"], 0.0)
                k = 10
                tt_ = np.linspace(0, 1, k)
                ths = 0.12 * np.pi + tt_ * (end - 0.12 * np.pi)
                As = a0 + drift * tt_ ** 1.5
                s = vol + 0.02 + 0.05 * np.sin(np.pi * tt_ * 0.8)
                path = head_point(d, ths, As, 1.0) * 0 + head_point(d, ths, As, s)
                w = 2 * span / nb * Rx * vol * (1.5 if h["bangs"] != "spiky" else 1.9)
                self.strand(f"bang{i}", path, w, hair_thick, tip=0.45 if h["bangs"] != "blunt" else 0.25)
        # side locks framing the face
        if h["side_locks"]:
            for sx in (-1, 1):
                a0 = sx * np.radians(84)
                end_y = max(d["chin_y"] - 0.15 * d["hh"] - (0.2 * d["hh"] if h["length"] in ("long", "very_long") else 0),
                            d["shoulder_y"] + 0.02)
                top = head_point(d, np.array([0.25, 0.45, 0.58]) * np.pi, np.full(3, a0), vol + 0.03)
                low = top[-1] + np.array([sx * 0.05 * Rx, 0, 0.05 * Rx])
                low[1] = end_y
                path = smooth_path(np.concatenate([top, [low]]), 10)
                self.strand("side_lock", path, 0.4 * Rx, hair_thick)
        # back hair
        length = h["length"]
        ends = {"short": None, "bob": d["chin_y"] - 0.05 * d["hh"], "medium": d["shoulder_y"] - 0.12 * d["torso_len"],
                "long": d["waist_y"], "very_long": d["crotch_y"] - 0.15 * d["crotch_y"]}
        y_end = ends[length]
        if y_end is not None and p["accessories"]["backpack"]:
            y_end = max(y_end, d["shoulder_y"] - 0.05 * d["torso_len"])
        n = h["strands"]
        a_min = np.radians(75)
        for i in range(n):
            a0 = a_min + (2 * np.pi - 2 * a_min) * (i + 0.5) / n + rng.normal(0, 0.04)
            side = abs(np.sin(a0))
            if y_end is None:
                ths = np.linspace(0.1, 0.78 + 0.05 * rng.random(), 10) * np.pi
                path = head_point(d, ths, np.full(10, a0), vol + 0.03 + 0.03 * np.sin(np.linspace(0, np.pi, 10)))
            else:
                ths = np.linspace(0.1, 0.62, 6) * np.pi
                surf = head_point(d, ths, np.full(6, a0), vol + 0.03)
                ye = y_end + rng.normal(0, 0.04) * d["hh"]
                if side > 0.8:     # the lateral locks stop higher
                    ye = max(ye, min(d["chin_y"], y_end + 0.3 * (surf[-1, 1] - y_end)))
                ye = min(ye, surf[-1, 1] - 0.05)
                k = 10
                tt_ = np.linspace(0, 1, k)[1:]
                hang = np.stack([surf[-1, 0] * (1 + 0.25 * tt_), surf[-1, 1] + (ye - surf[-1, 1]) * tt_,
                                 surf[-1, 2] * (1 + 0.15 * tt_)], -1)
                path = np.concatenate([surf, hang])
                path[:, 2] = np.minimum(path[:, 2], self.hair_floor_z(path[:, 1]))
                path = smooth_path(path, 14)
                path[:, 2] = np.minimum(path[:, 2], self.hair_floor_z(path[:, 1]))
            w = (2 * np.pi - 2 * a_min) / n * Rx * vol * 1.7
            self.strand(f"back{i}", path, w, hair_thick * 1.2, tip=0.3)
        if h["spiky"]:     # a few big locks sweeping up and back
            for i in range(7):
                a0 = np.pi + np.radians(-120 + 240 * (i + 0.5) / 7)
                th0 = (0.22 + 0.12 * (i % 2)) * np.pi
                base = head_point(d, th0, a0, vol)
                tipp = head_point(d, th0 + 0.12 * np.pi, a0, vol + 0.35 + 0.15 * rng.random()) + np.array([0, 0.15 * Rx, 0])
                path = smooth_path([base, (base + tipp) / 2 + (base - np.array([0, d["head_cy"], 0])) * 0.05, tipp], 8)
                self.strand(f"spike{i}", path, 0.5 * Rx, 0.18 * Rx, tip=0.9)
        if h["ahoge"]:
            base = head_point(d, 0.08 * np.pi, 0.0, vol)
            ctrl = [base, base + np.array([0, 0.35, 0.15]) * Rx, base + np.array([0.05, 0.55, -0.1]) * Rx,
                    base + np.array([0.15, 0.5, -0.35]) * Rx]
            self.strand("ahoge", smooth_path(ctrl, 10), 0.14 * Rx, 0.03 * Rx, tip=0.6)
        self.tails()

    def tails(self):
        d, p = self.d, self.p
        h = p["hair"]
        Rx, vol = d["Rx"], h["volume"]
        kind = h["tail"]
        if kind == "none":
            if p["accessories"]["hair_bow"]:     # a bow on the back of the head: a clear back-view cue
                a0 = np.pi + (0.5 if self.rng.random() < 0.5 else 0.0)
                pos = head_point(d, 0.42 * np.pi, a0, vol + 0.06)
                out = pos - np.array([0, d["head_cy"], d["head_cz"]])
                self.bow(pos, out, 0.55 * Rx, p["accessories"]["bow_colour"], "head")
            return
        tie_col = p["accessories"]["bow_colour"]
        drop = h["tail_length"] * (d["chin_y"] - d["crotch_y"] * 0.6)
        roots = {"ponytail": [(0.42 * np.pi, np.pi)], "twintails": [(0.4 * np.pi, np.radians(115)), (0.4 * np.pi, np.radians(245))],
                 "side_tail": [(0.42 * np.pi, np.radians(110))], "bun": [(0.22 * np.pi, np.pi)]}[kind]
        for th0, a0 in roots:
            root = head_point(d, th0, a0, vol + 0.02)
            out = root - np.array([0, d["head_cy"], d["head_cz"]])
            out[1] = 0
            out = out / np.linalg.norm(out)
            tie = ellipsoid("tie", root, (0.13 * Rx, 0.13 * Rx, 0.13 * Rx), k=6, m=8)
            self.add(tie, tie_col, "head")
            if kind == "bun":
                bun = ellipsoid("bun", root + out * 0.3 * Rx + np.array([0, 0.1 * Rx, 0]), (0.4 * Rx, 0.42 * Rx, 0.42 * Rx), k=8, m=12)
                bun.st = bun.st * 0.3 + 0.35
                self.add(bun, "strand", "head")
                continue
            for j in range(3):
                jit = np.array([(j - 1) * 0.08 * Rx, 0, 0])
                c1 = root + out * 0.45 * Rx + np.array([0, 0.1 * Rx, 0]) + jit
                c2 = root + out * 0.7 * Rx + np.array([0, -0.35 * drop, 0]) + jit * 2
                c3 = root + out * 0.6 * Rx + np.array([0, -drop * (0.9 + 0.1 * j), 0]) + jit * 3
                path = smooth_path([root, c1, c2, c3], 14)
                path[:, 2] = np.minimum(path[:, 2], self.hair_floor_z(path[:, 1]) - 0.15 * Rx)
                self.strand(f"tail{j}", path, 0.5 * Rx, 0.32 * Rx, tip=0.45, root_taper=0.35)
            if p["accessories"]["hair_bow"]:
                self.bow(root + out * 0.12 * Rx, out, 0.45 * Rx, p["accessories"]["bow_colour"], "head")

    # ---- clothes and accessories
    def bow(self, centre, normal, size, colour, bone):
        """Ribbon bow: two loops, a knot and two tails, facing ``normal``."""
        n = np.asarray(normal, float)
        n = n / np.linalg.norm(n)
        side = np.cross([0, 1, 0], n)
        if np.linalg.norm(side) < 1e-6:
            side = np.array([1.0, 0, 0])
        side = side / np.linalg.norm(side)
        up = np.cross(n, side)
        for sx in (-1, 1):
            loop = ellipsoid("bow_loop", centre + side * sx * size * 0.55 + up * size * 0.08,
                             (size * 0.5, size * 0.15, size * 0.32), axis=side * sx + up * 0.3, front=n, k=7, m=10)
            self.add(loop, colour, bone)
            tail = ellipsoid("bow_tail", centre + side * sx * size * 0.25 - up * size * 0.5,
                             (size * 0.45, size * 0.06, size * 0.14), axis=up + side * sx * 0.35, front=n, k=6, m=8)
            self.add(tail, tx.shade(colour, 0.9), bone)
        knot = ellipsoid("bow_knot", centre + n * size * 0.05, (size * 0.2, size * 0.16, size * 0.2), front=n, k=6, m=8)
        self.add(knot, tx.shade(colour, 0.85), bone)

    def outfit_extras(self):
        d, p = self.d, self.p
        o, a = p["outfit"], p["accessories"]
        tx.paint_extras(self.atlas, p)
        if o["neck_ribbon"]:
            y = d["shoulder_y"] - 0.12 * d["torso_len"]
            z = float(np.interp(y, self.torso_profile[1], self.torso_profile[3])) + 0.01
            col = o["accent"] if o["top"] != "sailor" else tx.shade(o["accent"], 1.0)
            self.bow(np.array([0, y, z]), (0, 0, 1), 0.5 * d["chest_rx"], (200, 40, 50) if o["top"] == "sailor" else col, "chest")
        if o["top"] == "hoodie":
            hood = ellipsoid("hood", (0, d["shoulder_y"] - 0.06 * d["torso_len"], -d["chest_rz"] * 1.0),
                             (0.2 * d["torso_len"], 0.45 * d["chest_rz"], 0.72 * d["chest_rx"]), k=8, m=12)
            self.add(hood, tx.shade(o["top_colour"], 0.85), "chest")
        if a["backpack"]:
            h = 0.55 * d["torso_len"] + 0.02
            w = d["chest_rx"] * 0.85
            dep = d["chest_rz"] * 0.8
            cy = d["chest_y"] - 0.1 * d["torso_len"]
            cz = -(d["chest_rz"] * 1.02 + dep)
            t = np.linspace(0, 1, 6)
            path = np.stack([np.zeros(6), cy - h / 2 + h * t, np.full(6, cz)], -1)
            sq = lambda u, v: 1 / (np.abs(np.cos(2 * np.pi * u)) ** 4 + np.abs(np.sin(2 * np.pi * u)) ** 4) ** 0.25   # noqa: E731
            rr = np.array([0.8, 0.97, 1, 1, 0.97, 0.8])
            B = sweep("backpack", path, dep * rr, w * rr, m=24, modulate=sq, caps=True)
            self.add(B, "backpack", "chest")
            for sx in (-1, 1):
                ctrl = [(sx * w * 0.55, cy + h * 0.4, cz + dep * 0.5), (sx * d["shoulder_rx"] * 0.55, d["shoulder_y"] + 0.012, -0.3 * d["chest_rz"]),
                        (sx * d["shoulder_rx"] * 0.55, d["shoulder_y"] + 0.005, 0.5 * d["chest_rz"]),
                        (sx * d["chest_rx"] * 0.6, d["chest_y"], d["chest_rz"] * 1.08 + 0.006),
                        (sx * d["waist_rx"] * 0.7, d["waist_y"], d["waist_rz"] * 1.1 + 0.006)]
                sp = smooth_path(ctrl, 12)
                strap = sweep("strap", sp, 0.004, 0.12 * w, m=6, front=np.stack([np.zeros(12), sp[:, 1] - d["chest_y"], sp[:, 2]], -1) + [0, 0, 1e-3])
                self.add(strap, tx.shade(a["backpack_colour"], 0.7), "chest")
        if a["tail"]:
            base = np.array([0, d["hip_y"], -d["hip_rz"] * 0.9])
            L = d["torso_len"] * 1.1
            ctrl = [base, base + [0, -0.3 * L, -0.25 * L], base + [0.08 * L, -0.15 * L, -0.5 * L],
                    base + [0.12 * L, 0.2 * L, -0.6 * L], base + [0.1 * L, 0.35 * L, -0.5 * L]]
            path = smooth_path(ctrl, 16)
            r = d["leg_r"] * 0.55 * np.ones(16)
            r[-4:] *= np.linspace(1, 0.3, 4)
            self.add(sweep("tail", path, r, r, m=8), p["hair"]["colour"], "hips")

    def headwear(self):
        d, p = self.d, self.p
        a = p["accessories"]
        vol = p["hair"]["volume"]
        Rx, Ry = d["Rx"], d["Ry"]
        if a["cat_ears"]:
            for sx in (-1, 1):
                base = head_point(d, 0.2 * np.pi, sx * np.radians(40), vol - 0.05)
                up = head_point(d, 0.05 * np.pi, sx * np.radians(55), vol + 0.6) - base
                path = smooth_path([base, base + up * 0.5, base + up], 6)
                r = np.linspace(0.3, 0.0, 6) * Rx
                self.add(sweep("cat_ear", path, r * 0.35, r, m=8, front=(0, 0, 1)), "ear", "head")
        if a["glasses"]:
            ey = d["head_cy"] - 0.16 * Ry
            G = card("glasses", (0, ey, d["head_cz"] + d["Rz"] * 1.03), (1, 0, 0), (0, 1, 0), 2.0 * Rx * 0.9, 0.5 * Ry)
            self.add(G, "glasses", "head", material=1)
        hat = a["hat"]
        c = np.array([0, d["head_cy"], d["head_cz"]])
        if hat == "beret":
            b = ellipsoid("beret", c + [0.1 * Rx, 0.78 * Ry * vol, -0.1 * Rx], (0.32 * Ry, 1.2 * Rx, 1.25 * Rx), axis=(0.2, 1, -0.15), k=8, m=16)
            self.add(b, a["hat_colour"], "head")
        elif hat in ("cap", "beanie"):
            dome = ellipsoid(hat, c, (Ry * (vol + 0.06), d["Rz"] * (vol + 0.06), Rx * (vol + 0.06)), k=10, m=20, polar=(0.5, 1.0))
            dome.pos[:, 1] = c[1] + (dome.pos[:, 1] - c[1]) * 1.0 + 0.15 * Ry
            dome.st[:, 1] = 1 - dome.st[:, 1]
            self.add(dome, "hat", "head")
            if hat == "cap":
                v = ellipsoid("visor", c + [0, 0.2 * Ry, d["Rz"] * (vol + 0.25)], (0.45 * Rx, 0.75 * Rx, 0.04 * Ry),
                              axis=(0, -0.25, 1), front=(1, 0, 0), k=6, m=12)
                self.add(v, tx.shade(a["hat_colour"], 0.8), "head")
            else:
                pom = ellipsoid("pompom", c + [0, (vol + 0.2) * Ry, 0], (0.22 * Rx,) * 3, k=6, m=8)
                self.add(pom, (250, 250, 250), "head")
        elif hat == "witch":
            brim = ellipsoid("brim", c + [0, 0.5 * Ry, 0], (0.03 * Ry, 2.0 * Rx, 2.0 * Rx), k=6, m=24)
            rr = np.hypot(brim.pos[:, 0] - c[0], brim.pos[:, 2] - c[2]) / (2.0 * Rx)
            brim.pos[:, 1] -= 0.35 * Ry * rr ** 2          # drooping brim reads from the front
            self.add(brim, a["hat_colour"], "head")
            top = min(1.8 * Ry, 0.3)     # stay inside the head framing box (head bone + 0.1 +- 0.35)
            ctrl = [c + [0, top, -0.6 * Rx], c + [0, 0.45 * Ry + 0.7 * (top - 0.45 * Ry), -0.1 * Rx],
                    c + [0, 0.45 * Ry + 0.35 * (top - 0.45 * Ry), 0], c + [0, 0.45 * Ry, 0]]
            path = smooth_path(ctrl, 10)
            r = np.linspace(0.0, 1.0, 10) ** 0.9 * Rx * 1.05 + 1e-4
            self.add(sweep("witch_cone", path, r, r, m=16), "hat", "head")

    def build(self) -> tuple[list[Part], "tx.Atlas"]:
        self.head()
        self.torso()
        self.limbs()
        self.skirt()
        self.hair()
        self.outfit_extras()
        self.headwear()
        return self.parts, self.atlas

    def joints(self) -> np.ndarray:
        return joint_positions(self.d)

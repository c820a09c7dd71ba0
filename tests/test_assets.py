"""Characters in: loaders (VRM/glTF/OBJ), posing and framing, on real and hand-built files."""
import base64
import io
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training.data.assets.framing import frame
from training.data.assets.load import load_character
from training.data.assets.pose import lower_arms
from training.errors import UserError

REAL = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real_models"
if not REAL.exists():
    REAL = Path("/work/shared/data/real_models")
GODETTE = REAL / "godette" / "godette.vrm"
RAI = REAL / "rai_girl"
needs_real = pytest.mark.skipif(not GODETTE.exists() or not (RAI / "model.obj").exists(),
                                reason="real test models not available")


@pytest.fixture(scope="module")
def godette():
    return load_character(GODETTE)


@pytest.fixture(scope="module")
def rai():
    return load_character(RAI / "model.obj", texture=RAI / "diffuse_map.png")


def _prim(c, name):
    return next(p for p in c.primitives if p.name == name)


# ----------------------------------------------------------------------------- godette (VRM 0.x)

@needs_real
def test_godette_counts_materials_and_height(godette):
    c = godette
    assert c.meta["format"] == "vrm0"
    assert [p.name for p in c.primitives] == ["FaceMesh", "BodyMesh.0", "BodyMesh.1", "BodyMesh.2"]
    assert len(c.skeleton.humanoid) == 45
    lo, hi = c.bounds()
    assert 1.45 < hi[1] - lo[1] < 1.55 and abs(lo[1]) < 0.01          # metres, feet on the ground
    names = [m.name for m in c.materials]
    assert names == ["Face", "Body", "GodotLogo", "Backpack"]
    for m in c.materials:
        assert m.texture is not None and m.texture.dtype == np.uint8 and m.texture.shape[2] == 4
    face, logo = c.materials[0], c.materials[2]
    assert face.alpha_mode == "OPAQUE" and face.double_sided is False     # MToon _CullMode 2 = back
    assert logo.alpha_mode == "BLEND" and logo.double_sided
    for p in c.primitives:
        assert p.uvs.shape == (len(p.positions), 2)
        assert np.allclose(p.weights.sum(1), 1, atol=1e-5)
        assert p.joints.max() < len(c.skeleton.names) and p.faces.max() < len(p.positions)


@needs_real
def test_godette_faces_plus_z(godette):
    c, sk = godette, godette.skeleton
    # toes point forward, the left hand is on +X (DESIGN: right hand on -X)
    assert sk.bone_position("leftToes")[2] > sk.bone_position("leftFoot")[2] + 0.03
    assert sk.bone_position("leftHand")[0] > 0.3 > -0.3 > sk.bone_position("rightHand")[0]
    # the Godot logo decal sits on the front of the shirt, the backpack on the back
    chest_z = sk.bone_position("chest")[2]
    assert _prim(c, "BodyMesh.1").positions[:, 2].mean() > chest_z + 0.03
    assert _prim(c, "BodyMesh.2").positions[:, 2].mean() < chest_z - 0.1


@needs_real
def test_godette_lower_arms_symmetric(godette):
    posed = lower_arms(godette, 60.0)
    sk0, sk1 = godette.skeleton, posed.skeleton
    for side in ("left", "right"):
        h0, h1 = sk0.bone_position(f"{side}Hand"), sk1.bone_position(f"{side}Hand")
        assert h1[1] < h0[1] - 0.2                       # hands clearly lower
        # rotation about the shoulder keeps the arm length
        s = sk0.bone_position(f"{side}UpperArm")
        assert np.linalg.norm(h1 - s) == pytest.approx(np.linalg.norm(h0 - s), abs=1e-4)
    l, r = sk1.bone_position("leftHand"), sk1.bone_position("rightHand")
    assert l[0] == pytest.approx(-r[0], abs=1e-4) and l[1] == pytest.approx(r[1], abs=1e-4)
    assert np.allclose(sk1.bone_position("head"), sk0.bone_position("head"))
    # skinned mesh follows: narrower, and still mirror-symmetric like the bind pose
    (lo0, hi0), (lo1, hi1) = godette.bounds(), posed.bounds()
    assert hi1[0] - lo1[0] < 0.7 * (hi0[0] - lo0[0])
    assert hi1[0] == pytest.approx(-lo1[0], abs=2e-3)
    body = _prim(posed, "BodyMesh.0").positions
    from scipy.spatial import cKDTree
    d, _ = cKDTree(body).query(body * np.array([-1, 1, 1]))
    assert np.median(d) < 1e-4
    # the input character is untouched
    assert np.allclose(godette.skeleton.bone_position("leftHand"), sk0.bone_position("leftHand"))


@needs_real
def test_godette_framing(godette):
    posed = lower_arms(godette)
    head = frame(posed, "head")
    assert not head.head_estimated and head.box == pytest.approx(0.7)
    assert np.allclose(head.origin, godette.skeleton.bone_position("head") + [0, 0.1, 0], atol=1e-6)
    assert np.allclose(head.character.skeleton.bone_position("head"), [0, -0.1, 0], atol=1e-5)
    face = _prim(head.character, "FaceMesh").positions
    assert (np.abs(face) <= 0.35).all(1).mean() > 0.95          # the head fits the 0.7 box
    body = frame(posed, "body")
    lo, hi = body.character.bounds()
    assert np.allclose((lo + hi) / 2, 0, atol=1e-5) and body.box == pytest.approx(2.1)
    assert body.inside_fraction() == 1.0
    assert body.character.meta["framing"]["origin"] == pytest.approx(list(body.origin))
    ch, info = body                                                  # unpacks as (character, info)
    assert ch is body.character and info["box"] == 2.1 and info["head_estimated"] is False
    # without a skeleton the head is estimated and still covers the face
    est = frame(type(godette)(**{**godette.__dict__, "skeleton": None}), "head")
    assert est.head_estimated and "estimated" in " ".join(est.character.meta["notes"])
    face = _prim(est.character, "FaceMesh").positions
    assert (np.abs(face) <= 0.35).all(1).mean() > 0.9


@needs_real
def test_truncated_and_corrupt_vrm(tmp_path):
    data = GODETTE.read_bytes()
    cut = tmp_path / "cut.vrm"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="cut.vrm: truncated"):
        load_character(cut)
    # intact header, bytes of the JSON chunk garbled
    bad = bytearray(data)
    bad[40:60] = b"\xff" * 20
    (tmp_path / "bad.vrm").write_bytes(bytes(bad))
    with pytest.raises(UserError, match="bad.vrm: corrupt glTF JSON"):
        load_character(tmp_path / "bad.vrm")


# ----------------------------------------------------------------------------- rai_girl (OBJ)

@needs_real
def test_rai_girl_auto_clean_axes_and_texture(rai):
    c = rai
    dropped = {d["name"].split("/")[-1] for d in c.meta["dropped"]}
    assert {"ground_ground_ground", "widgets_Cube_None"} <= dropped
    assert len(c.primitives) == 4 and c.skeleton is None
    assert c.meta["up_axis"] == "z" and c.meta["forward_axis"] == "-y"
    lo, hi = c.bounds()
    assert 1.32 < hi[1] - lo[1] < 1.35 and 0.6 < hi[0] - lo[0] < 0.75
    # faces +Z: the eyes are in front of the head
    eye = _prim(c, "eye/eye_eye_eye").positions
    body = _prim(c, "model/model_model_model").positions
    head_slice = body[(body[:, 1] > eye[:, 1].min()) & (body[:, 1] < eye[:, 1].max())]
    assert eye[:, 2].mean() > head_slice[:, 2].mean() + 0.03
    assert c.meta["toe_direction_z"] > 0
    # the given texture is used, with UVs flipped to the glTF convention
    assert all(m.texture is not None and m.texture.shape == (1024, 1024, 4) for m in c.materials)
    tex = c.materials[0].texture

    def sample(name):
        uv = _prim(c, name).uvs
        assert ((uv >= 0) & (uv <= 1)).all()
        ij = np.clip((uv * 1024).astype(int), 0, 1023)
        return tex[ij[:, 1], ij[:, 0], :3].astype(float).mean(0)
    eye, jacket = sample("eye/eye_eye_eye"), sample("jacket/jacket_jacket_jacket")
    assert eye.min() > 200 and np.ptp(eye) < 20                     # white eyeballs (skin if V were unflipped)
    assert jacket.max() < 80                                         # the black jacket


@needs_real
def test_rai_girl_options():
    obj = RAI / "model.obj"
    plain = load_character(obj)
    assert all(m.texture is None for m in plain.materials)
    assert "no textures: base colour only" in plain.meta["notes"]
    back = load_character(obj, up_axis="z", forward_axis="+y")
    eye = _prim(back, "eye/eye_eye_eye").positions
    assert eye[:, 2].mean() < 0                                      # told the wrong way: faces -Z
    yup = load_character(obj, up_axis="y", forward_axis="+z")
    lo, hi = yup.bounds()
    assert hi[1] - lo[1] < 0.3                                       # file Y is the depth axis
    only = load_character(obj, include=["eye"])          # exact object name (eye* also matches eyebrows)
    assert [p.name for p in only.primitives] == ["eye/eye_eye_eye"]
    excl = load_character(obj, exclude=["*jacket*"])
    assert "jacket/jacket_jacket_jacket" not in [p.name for p in excl.primitives]
    assert any(d["reason"] == "excluded" for d in excl.meta["dropped"])
    raw = load_character(obj, auto_clean=False)
    assert raw.bounds()[1][1] > 5                                    # ground backdrop kept
    assert lower_arms(raw) is not raw and "arms not lowered" in lower_arms(raw).meta["notes"][-1]
    with pytest.raises(UserError, match="every part was excluded"):
        load_character(obj, include=["nothing*"])


@needs_real
def test_rai_girl_geometric_clean_without_names(tmp_path):
    """Helpers with innocent names are still dropped: far outside the body's box."""
    text = (RAI / "model.obj").read_text()
    for old, new in (("ground_ground_ground", "partA"), ("o ground", "o partA"),
                     ("widgets_Cube_None", "partB"), ("o widgets_Cube", "o partB")):
        text = text.replace(old, new)
    (tmp_path / "renamed.obj").write_text(text)
    c = load_character(tmp_path / "renamed.obj")
    assert {d["name"] for d in c.meta["dropped"]} == {"partA/partA", "partB/partB"}
    lo, hi = c.bounds()
    assert 1.32 < hi[1] - lo[1] < 1.35


@needs_real
def test_rai_girl_framing_estimates_head(rai):
    head = frame(rai, "head")
    assert head.head_estimated and head.head_source == "estimated"
    eye = _prim(head.character, "eye/eye_eye_eye").positions
    assert (np.abs(eye) <= 0.35).all()
    lo, hi = frame(rai, "body").character.bounds()
    assert np.allclose((lo + hi) / 2, 0, atol=1e-5)


# ----------------------------------------------------------------------------- hand-built glTF

def _png_data_uri(rgba) -> str:
    buf = io.BytesIO()
    Image.fromarray(np.asarray(rgba, np.uint8)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


class _Builder:
    def __init__(self):
        self.bin = bytearray()
        self.views, self.accessors = [], []

    def view(self, arr) -> int:
        while len(self.bin) % 4:
            self.bin += b"\0"
        data = np.ascontiguousarray(arr).tobytes()
        self.views.append({"buffer": 0, "byteOffset": len(self.bin), "byteLength": len(data)})
        self.bin += data
        return len(self.views) - 1

    def acc(self, arr, type_, ctype, normalized=False, **extra) -> int:
        arr = np.asarray(arr)
        a = {"bufferView": self.view(arr), "componentType": ctype, "count": len(arr), "type": type_, **extra}
        if normalized:
            a["normalized"] = True
        if type_ == "VEC3" and ctype == 5126:
            a["min"], a["max"] = arr.min(0).tolist(), arr.max(0).tolist()
        self.accessors.append(a)
        return len(self.accessors) - 1

    def glb(self, doc: dict) -> bytes:
        doc = {**doc, "asset": {"version": "2.0"}, "bufferViews": self.views, "accessors": self.accessors,
               "buffers": [{"byteLength": len(self.bin)}]}
        js = json.dumps(doc).encode()
        js += b" " * (-len(js) % 4)
        b = bytes(self.bin) + b"\0" * (-len(self.bin) % 4)
        body = struct.pack("<I4s", len(js), b"JSON") + js + struct.pack("<I4s", len(b), b"BIN\x00") + b
        return struct.pack("<4sII", b"glTF", 2, 12 + len(body)) + body


def _arms_glb(extensions=None, extras=True) -> bytes:
    """A T-posed stick figure: torso quad + two arm quads skinned to shoulder/hand joints."""
    b = _Builder()
    # joints: 0 hips(root) 1 head 2 leftUpperArm 3 leftHand 4 rightUpperArm 5 rightHand
    nodes = [{"name": "hips", "translation": [0, 1.0, 0], "children": [1, 2, 4]},
             {"name": "head", "translation": [0, 0.4, 0]},
             {"name": "L_arm", "translation": [0.2, 0.3, 0], "children": [3]},
             {"name": "L_hand", "translation": [0.4, 0, 0]},
             {"name": "R_arm", "translation": [-0.2, 0.3, 0], "children": [5]},
             {"name": "R_hand", "translation": [-0.4, 0, 0]}]
    glob = {0: [0, 1, 0], 1: [0, 1.4, 0], 2: [0.2, 1.3, 0], 3: [0.6, 1.3, 0], 4: [-0.2, 1.3, 0], 5: [-0.6, 1.3, 0]}
    ibm = np.stack([np.linalg.inv(np.block([[np.eye(3), np.array(glob[j])[:, None]], [np.zeros((1, 3)), 1]])).T
                    for j in range(6)]).astype(np.float32)   # column-major
    pos = np.array([[-0.2, 0, 0], [0.2, 0, 0], [0.2, 1.5, 0], [-0.2, 1.5, 0],          # torso
                    [0.2, 1.25, 0], [0.6, 1.25, 0], [0.6, 1.35, 0], [0.2, 1.35, 0],    # left arm
                    [-0.2, 1.25, 0], [-0.6, 1.25, 0], [-0.6, 1.35, 0], [-0.2, 1.35, 0]], np.float32)
    joints = np.zeros((12, 4), np.uint8)
    joints[4:8, 0] = [2, 3, 3, 2]
    joints[8:12, 0] = [4, 5, 5, 4]
    weights = np.zeros((12, 4), np.float32)
    weights[:, 0] = 1
    faces = np.array([0, 1, 2, 0, 2, 3, 4, 5, 6, 4, 6, 7, 8, 10, 9, 8, 11, 10], np.uint16)
    doc = {"scene": 0, "scenes": [{"nodes": [0, 6]}],
           "nodes": nodes + [{"name": "body", "mesh": 0, "skin": 0}],
           "skins": [{"joints": list(range(6)), "inverseBindMatrices": b.acc(ibm.reshape(6, 16), "MAT4", 5126)}],
           "meshes": [{"name": "figure", "primitives": [{"attributes": {
               "POSITION": b.acc(pos, "VEC3", 5126), "JOINTS_0": b.acc(joints, "VEC4", 5121),
               "WEIGHTS_0": b.acc(weights, "VEC4", 5126)}, "indices": b.acc(faces, "SCALAR", 5123)}]}]}
    if extensions:
        doc["extensions"] = extensions
    if extras:
        doc["scenes"][0]["extras"] = {"anime3d": {"humanoid": {"hips": 0, "head": 1, "leftUpperArm": 2,
                                                               "leftHand": 3, "rightUpperArm": 4, "rightHand": 5},
                                                  "head_position": [0, 1.4, 0]}}
    return b.glb(doc)


def test_synthetic_extras_skin_and_lower_arms(tmp_path):
    p = tmp_path / "fig.glb"
    p.write_bytes(_arms_glb())
    c = load_character(p)
    assert c.meta["format"] == "glb" and c.meta["head_position"] == [0, 1.4, 0]
    assert c.skeleton.humanoid["leftUpperArm"] == 2
    assert np.allclose(c.skeleton.bone_position("leftHand"), [0.6, 1.3, 0])
    posed = lower_arms(c, 90.0)
    pts = posed.primitives[0].positions
    # left arm quad hangs straight down from the shoulder (0.2, 1.3): exact LBS result
    assert np.allclose(pts[5], [0.2 - 0.05, 1.3 - 0.4, 0], atol=1e-5)
    assert np.allclose(pts[9], [-0.2 + 0.05, 1.3 - 0.4, 0], atol=1e-5)
    assert np.allclose(pts[:4], c.primitives[0].positions[:4])          # torso not moved
    fr = frame(posed, "head")
    assert fr.head_source == "bone" and np.allclose(fr.origin, [0, 1.5, 0])
    # without a head bone, the file's head_position is used
    p2 = tmp_path / "nohead.glb"
    p2.write_bytes(_arms_glb())
    c2 = load_character(p2)
    del c2.skeleton.humanoid["head"]
    fr2 = frame(c2, "head")
    assert fr2.head_source == "head_position" and not fr2.head_estimated


def test_vrm_versions_facing_and_humanoid(tmp_path):
    v1 = {"VRMC_vrm": {"specVersion": "1.0", "humanoid": {"humanBones": {
        "hips": {"node": 0}, "head": {"node": 1}, "leftUpperArm": {"node": 2}, "rightUpperArm": {"node": 4}}}}}
    v0 = {"VRM": {"specVersion": "0.0", "humanoid": {"humanBones": [
        {"bone": "hips", "node": 0}, {"bone": "head", "node": 1},
        {"bone": "leftUpperArm", "node": 2}, {"bone": "rightUpperArm", "node": 4}]}}}
    (tmp_path / "a.vrm").write_bytes(_arms_glb(v1, extras=False))
    (tmp_path / "b.vrm").write_bytes(_arms_glb(v0, extras=False))
    a, b = load_character(tmp_path / "a.vrm"), load_character(tmp_path / "b.vrm")
    assert a.meta["format"] == "vrm1" and b.meta["format"] == "vrm0"
    assert len(a.skeleton.humanoid) == len(b.skeleton.humanoid) == 4
    # VRM 0.x is turned 180 deg about Y: the file's +X arm ends up on -X
    assert np.allclose(b.primitives[0].positions, a.primitives[0].positions * [-1, 1, -1])
    assert a.skeleton.bone_position("leftUpperArm")[0] > 0 > b.skeleton.bone_position("leftUpperArm")[0]
    # lowering works whichever side the arm is on
    for c in (a, b):
        assert lower_arms(c).skeleton.bone_position("leftUpperArm")[1] == pytest.approx(1.3)
        hand = lower_arms(c).primitives[0].positions[5]
        assert hand[1] < 1.0


def test_sparse_normalized_colors_texture(tmp_path):
    b = _Builder()
    pos = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], np.float32)
    base = b.acc(pos, "VEC3", 5126)
    # sparse: vertex 2 moved up to y = 2
    b.accessors[base]["sparse"] = {"count": 1, "indices": {"bufferView": b.view(np.array([2], np.uint16)),
                                                           "componentType": 5123},
                                   "values": {"bufferView": b.view(np.array([[1, 2, 0]], np.float32))}}
    uv = b.acc(np.array([[0, 0], [65535, 0], [65535, 65535], [0, 65535]], np.uint16), "VEC2", 5123, True)
    col = b.acc(np.array([[255, 0, 0, 255], [0, 255, 0, 255], [0, 0, 255, 255], [255, 255, 255, 51]],
                         np.uint8), "VEC4", 5121, True)
    tex = np.zeros((2, 2, 4), np.uint8)
    tex[0, 0] = [255, 0, 0, 255]                                      # top-left red
    # a node with a mirroring scale: winding must be flipped to stay front-facing
    doc = {"scenes": [{"nodes": [0, 1]}],
           "nodes": [{"mesh": 0}, {"mesh": 0, "scale": [-1, 1, 1], "translation": [5, 0, 0]}],
           "meshes": [{"primitives": [{"attributes": {"POSITION": base, "TEXCOORD_0": uv, "COLOR_0": col},
                                       "indices": b.acc(np.array([0, 1, 2, 0, 2, 3], np.uint32), "SCALAR", 5125),
                                       "material": 0}]}],
           "materials": [{"name": "m", "alphaMode": "MASK", "alphaCutoff": 0.3, "doubleSided": True,
                          "pbrMetallicRoughness": {"baseColorFactor": [0.5, 1, 1, 1],
                                                   "baseColorTexture": {"index": 0, "extensions": {
                                                       "KHR_texture_transform": {"scale": [0.5, 0.5]}}}}}],
           "textures": [{"source": 0}], "images": [{"uri": _png_data_uri(tex)}]}
    (tmp_path / "q.glb").write_bytes(b.glb(doc))
    c = load_character(tmp_path / "q.glb")
    p, q = c.primitives
    assert np.allclose(p.positions[2], [1, 2, 0])
    assert np.allclose(p.uvs, [[0, 0], [0.5, 0], [0.5, 0.5], [0, 0.5]], atol=1e-4)   # normalized, then transformed
    assert np.allclose(p.colors[0], [1, 0, 0, 1]) and p.colors[3, 3] == pytest.approx(0.2)
    m = c.materials[0]
    assert m.alpha_mode == "MASK" and m.alpha_cutoff == pytest.approx(0.3) and m.double_sided
    assert np.allclose(m.base_color_factor, [0.5, 1, 1, 1]) and tuple(m.texture[0, 0]) == (255, 0, 0, 255)
    assert c.skeleton is None and p.joints is None

    def normal(prim):
        a, b_, c_ = prim.positions[prim.faces[0]]
        return np.cross(b_ - a, c_ - a)
    assert normal(p)[2] > 0 and normal(q)[2] > 0                      # mirrored copy still faces +Z
    assert np.allclose(q.positions[:, 0], 5 - p.positions[:, 0])


def test_gltf_json_with_external_files(tmp_path):
    b = _Builder()
    pos = b.acc(np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], np.float32), "VEC3", 5126)
    (tmp_path / "data.bin").write_bytes(bytes(b.bin))
    Image.fromarray(np.full((4, 4, 3), 200, np.uint8)).save(tmp_path / "tex.png")
    doc = {"asset": {"version": "2.0"}, "buffers": [{"uri": "data.bin", "byteLength": len(b.bin)}],
           "bufferViews": b.views, "accessors": b.accessors, "nodes": [{"mesh": 0}], "scenes": [{"nodes": [0]}],
           "meshes": [{"primitives": [{"attributes": {"POSITION": pos}, "material": 0}]}],
           "materials": [{"pbrMetallicRoughness": {"baseColorTexture": {"index": 0}}}],
           "textures": [{"source": 0}], "images": [{"uri": "tex.png"}]}
    (tmp_path / "t.gltf").write_text(json.dumps(doc))
    c = load_character(tmp_path / "t.gltf")
    assert c.meta["format"] == "gltf" and c.materials[0].texture.shape == (4, 4, 4)
    assert c.primitives[0].faces.tolist() == [[0, 1, 2]]
    # image missing: loads, base colour only, noted
    (tmp_path / "tex.png").unlink()
    c = load_character(tmp_path / "t.gltf")
    assert c.materials[0].texture is None and any("not found" in n for n in c.meta["notes"])


# ----------------------------------------------------------------------------- bad input

def test_bad_inputs(tmp_path):
    (tmp_path / "junk.glb").write_bytes(b"\x00\x01garbage" * 10)
    with pytest.raises(UserError, match="junk.glb: not a glTF"):
        load_character(tmp_path / "junk.glb")
    with pytest.raises(UserError, match="missing.vrm: file not found"):
        load_character(tmp_path / "missing.vrm")
    (tmp_path / "x.fbx").write_bytes(b"x")
    with pytest.raises(UserError, match="x.fbx: unsupported"):
        load_character(tmp_path / "x.fbx")
    # valid container, no meshes
    b = _Builder()
    b.view(np.zeros(4, np.uint8))
    (tmp_path / "empty.glb").write_bytes(b.glb({"nodes": [{"name": "n"}], "scenes": [{"nodes": [0]}]}))
    with pytest.raises(UserError, match="empty.glb: empty mesh"):
        load_character(tmp_path / "empty.glb")
    # accessor pointing past its buffer (a corrupt file)
    b = _Builder()
    pos = b.acc(np.zeros((3, 3), np.float32), "VEC3", 5126)
    b.accessors[pos]["count"] = 1000
    (tmp_path / "over.glb").write_bytes(b.glb({"nodes": [{"mesh": 0}], "scenes": [{"nodes": [0]}],
                                                "meshes": [{"primitives": [{"attributes": {"POSITION": pos}}]}]}))
    with pytest.raises(UserError, match="over.glb: accessor reads past"):
        load_character(tmp_path / "over.glb")
    # OBJ: empty, and a face on a vertex that does not exist
    (tmp_path / "empty.obj").write_text("# nothing\nv 0 0 0\n")
    with pytest.raises(UserError, match="empty.obj: empty mesh"):
        load_character(tmp_path / "empty.obj")
    (tmp_path / "badf.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 9\n")
    with pytest.raises(UserError, match="badf.obj: .*missing vertex"):
        load_character(tmp_path / "badf.obj")
    (tmp_path / "badv.obj").write_text("v 0 zero 0\n")
    with pytest.raises(UserError, match="badv.obj: line 1"):
        load_character(tmp_path / "badv.obj")


def test_obj_mtl_texture_uv_flip_and_vertex_colors(tmp_path):
    tex = np.zeros((2, 2, 3), np.uint8)
    tex[0, :] = [255, 0, 0]                                            # top row red
    Image.fromarray(tex).save(tmp_path / "t.png")
    (tmp_path / "m.mtl").write_text("newmtl skin\nKd 0.5 0.5 0.5\nmap_Kd t.png\nnewmtl glass\nKd 0 0 1\nd 0.5\n")
    (tmp_path / "c.obj").write_text(
        "mtllib m.mtl\no body\nv 0 0 0 1 0 0\nv 0.3 0 0 0 1 0\nv 0.3 1.6 0 0 0 1\nv 0 1.6 0 1 1 1\n"
        "vt 0 0\nvt 1 0\nvt 1 1\nvt 0 1\nusemtl skin\nf 1/1 2/2 3/3 4/4\n"
        "o visor\nusemtl glass\nf 1 2 3\n")
    c = load_character(tmp_path / "c.obj", forward_axis="+z")
    body = _prim(c, "body")
    assert len(body.faces) == 2 and c.meta["up_axis"] == "y"
    top = body.uvs[np.argmax(body.positions[:, 1])]
    assert top[1] == pytest.approx(0.0)                                # OBJ v=1 (top) -> glTF v=0
    assert np.allclose(body.colors[0], [1, 0, 0, 1])
    skin, glass = c.materials
    assert tuple(skin.texture[0, 0]) == (255, 0, 0, 255) and np.allclose(skin.base_color_factor, 1)
    assert glass.alpha_mode == "BLEND" and np.allclose(glass.base_color_factor, [0, 0, 1, 0.5])
    assert _prim(c, "visor").uvs is None


def test_vrm0_mtoon_reduction_and_data_uri_buffer(tmp_path):
    b = _Builder()
    pos = b.acc(np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], np.float32), "VEC3", 5126)
    tex = np.full((2, 2, 4), 90, np.uint8)
    mtoon = {"name": "Hair", "shader": "VRM/MToon", "floatProperties": {"_BlendMode": 1, "_Cutoff": 0.3, "_CullMode": 0},
             "vectorProperties": {"_Color": [0.5, 0.25, 1, 1]}, "textureProperties": {"_MainTex": 0},
             "keywordMap": {"_ALPHATEST_ON": True}, "tagMap": {"RenderType": "TransparentCutout"}}
    doc = {"asset": {"version": "2.0"},
           "buffers": [{"uri": "data:application/octet-stream;base64," + base64.b64encode(bytes(b.bin)).decode(),
                        "byteLength": len(b.bin)}],
           "bufferViews": b.views, "accessors": b.accessors, "nodes": [{"mesh": 0}], "scenes": [{"nodes": [0]}],
           "meshes": [{"primitives": [{"attributes": {"POSITION": pos}, "material": 0}]}],
           "materials": [{"name": "Hair", "doubleSided": False}],       # glTF mirror without texture
           "textures": [{"source": 0}], "images": [{"uri": _png_data_uri(tex)}],
           "extensions": {"VRM": {"materialProperties": [mtoon], "humanoid": {"humanBones": []}}}}
    (tmp_path / "m.gltf").write_text(json.dumps(doc))
    c = load_character(tmp_path / "m.gltf")
    m = c.materials[0]
    assert c.meta["format"] == "vrm0" and "no humanoid bones" in c.meta["notes"]
    assert m.alpha_mode == "MASK" and m.alpha_cutoff == pytest.approx(0.3) and m.double_sided
    assert np.allclose(m.base_color_factor, [0.5, 0.25, 1, 1]) and m.texture[0, 0, 0] == 90
    assert np.allclose(c.primitives[0].positions[1], [-1, 0, 0])      # VRM 0.x turned to face +Z
    assert frame(c, "head").head_estimated

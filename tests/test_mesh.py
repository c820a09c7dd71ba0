"""Meshes that describe what the field renders: carving by the rendered alpha, fragments, warnings.

The main case is a tiny generator's field fitted for a few dozen steps to the renders of a toy
head-framed character: at that stage the field still holds faint fog around the character, which the
renders show as empty but which an uncarved marching cubes turns into a slab.
"""
import types

import numpy as np
import pytest
import torch

from tests.test_dataprep import raycast
from training import cameras
from training.infer import meshing
from training import volumetric_rendering as vr
from training.triplane import build_preset

# a head-framed toy character (framed metres): head, shoulders, a red blob on its left
HEAD = [((0.0, 0.03, 0.0), (0.15, 0.15, 0.14), (250, 210, 180)),
        ((0.0, -0.25, 0.0), (0.2, 0.14, 0.12), (60, 90, 200)),
        ((0.15, 0.1, 0.06), (0.06, 0.06, 0.06), (230, 30, 30))]
FIT_STEPS, FIT_RES = 40, 24
CHECK_RES = 64


def fit_field(framing="head", blobs=HEAD, steps=FIT_STEPS, res=FIT_RES, seed=0, lr_planes=0.02, lr_field=0.005):
    """A tiny single-view generator whose planes and decoder are fitted (L1 + alpha) to ray-cast renders of
    ``blobs`` from the 5 ortho and 8 random views.  Returns (G, planes)."""
    torch.manual_seed(seed)
    G = build_preset("tiny", framing=framing, variant="TriPlaneGenerator").eval()
    fr = cameras.get_framing(framing)
    views = cameras.view_set("ortho", fr) + cameras.view_set("rgb", fr, "toy", 0)
    tgt, alp = [], []
    for v in views:
        rgba, _ = raycast(v, res, blobs)
        a = torch.from_numpy(rgba[..., 3:] / 255.0).float()
        rgb = torch.from_numpy(rgba[..., :3] / 255.0).float() * a + (1 - a)
        tgt.append(rgb.permute(2, 0, 1))
        alp.append(a.permute(2, 0, 1))
    tgt, alp = torch.stack(tgt) * 2 - 1, torch.stack(alp)
    cams = cameras.as_tensor(views)
    with torch.no_grad():
        planes = G.synthesize({"front": torch.nn.functional.interpolate(tgt[:1], size=G.cond_resolution)})["planes"]
    planes = planes.clone().requires_grad_(True)
    opt = torch.optim.Adam([{"params": [planes], "lr": lr_planes}, {"params": list(G.field.parameters()), "lr": lr_field}])
    for _ in range(steps):
        idx = torch.randint(0, len(views), (3,))
        out = G.render({"planes": planes.expand(3, -1, -1, -1, -1)}, cams[idx], res, superresolve=False, perturb=True)
        loss = (out["image_raw"] - tgt[idx]).abs().mean() + ((out["image_alpha"] - alp[idx]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    G.requires_grad_(False)
    return G, {"planes": planes.detach()}


@pytest.fixture(scope="module")
def fitted():
    torch.set_num_threads(1)
    return fit_field()


def mesh_alpha(mesh, view, res=CHECK_RES):
    """Coverage of the mesh from a view, by the project's rasteriser."""
    from training.data import raster
    from training.data.assets.character import Character, Material, Primitive
    ch = Character("mesh", "test", [Primitive("mesh", np.asarray(mesh.vertices, np.float32),
                                              np.asarray(mesh.faces, np.int32))], [Material("m")])
    with raster.Rasteriser(res, 1).upload(ch) as scene:
        return scene.render(view)["rgba"][..., 3]


def iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


def test_mesh_silhouettes_agree_with_rendered_alpha(fitted):
    G, planes = fitted
    fr = cameras.get_framing("head")
    rep = meshing.MeshReport(CHECK_RES, 0.5, True, 0.5)
    mesh = meshing.extract_mesh(G, planes, resolution=CHECK_RES, report=rep)
    assert len(mesh.faces) > 100 and rep.vertices == len(mesh.vertices)
    assert rep.evaluated_fraction < 0.5        # density queried inside the hull only
    for name in ("front", "left", "top"):
        v = {x.name: x for x in cameras.view_set("ortho", fr)}[name]
        with torch.no_grad():
            alpha = G.render(planes, cameras.as_tensor([v]), CHECK_RES, superresolve=False)["image_alpha"]
        rendered = alpha[0, 0].numpy() > 0.5
        got = iou(mesh_alpha(mesh, v) > 0.5, rendered)
        assert got >= 0.8, (name, got)
    assert not rep.fills_box and not rep.warnings, rep.warnings


class FieldG:
    """The generator methods extract_mesh uses, on an analytic density (head framing, no planes)."""
    framing = "head"
    field = types.SimpleNamespace(box_warp=0.7)

    def __init__(self, density):
        self.density = density

    def _field(self, xyz, dirs=None):
        col = torch.tensor([0.9, 0.4, 0.2]).expand(*xyz.shape[:-1], 3)
        return self.density(xyz)[..., None], col

    def sample_density(self, planes, xyz, view_dirs=None):
        return self._field(xyz)[0]

    def sample_color(self, planes, xyz, view_dirs=None):
        return self._field(xyz)[1]

    def render(self, planes, c, n, superresolve=False, **kw):
        fr = cameras.get_framing(self.framing)
        out = vr.render_image(self._field, c, n, box_warp=0.7, ray_start=fr.near, ray_end=fr.far,
                              depth_resolution=48, depth_resolution_importance=48, perturb=False)
        return {"image_alpha": out["alpha"], "image_raw": out["features"] * 2 - 1, "image_depth": out["depth"]}


def ball(c, r, sigma=200.0):
    c = torch.tensor(c)
    return lambda x: sigma * ((x - c).norm(dim=-1) < r).float()


PLANES = {"planes": torch.zeros(1, 3, 1, 2, 2)}


def test_faint_fog_that_renders_empty_is_carved_away():
    """Fog of density 0.8 over the upper half: occupancy 1 - exp(-0.8) = 0.55 > 0.5, but a ray through it
    gathers alpha < 0.5, so the renders show nothing there.  Uncarved, marching cubes makes it a slab."""
    body = ball((0.0, -0.1, 0.0), 0.15)
    G = FieldG(lambda x: body(x) + 0.8 * (x[..., 1] > 0.05).float())
    slab = meshing.extract_mesh(G, PLANES, resolution=48, carve=False)
    assert np.ptp(slab.vertices[:, 0]) > 0.65 and np.ptp(slab.vertices[:, 2]) > 0.65   # uncarved: box-wide
    rep = meshing.MeshReport(48, 0.5, True, 0.5)
    mesh = meshing.extract_mesh(G, PLANES, resolution=48, report=rep)
    r = np.linalg.norm(mesh.vertices - [0.0, -0.1, 0.0], axis=1)
    assert len(mesh.vertices) > 100 and r.max() < 0.17 and abs(r.mean() - 0.15) < 0.01
    assert not rep.warnings


def test_fog_only_gives_an_empty_mesh_and_says_why(caplog):
    G = FieldG(lambda x: 0.8 * torch.ones(x.shape[:-1]))
    rep = meshing.MeshReport(32, 0.5, True, 0.5)
    with caplog.at_level("WARNING"):
        mesh = meshing.extract_mesh(G, PLANES, resolution=32, report=rep)
    assert len(mesh.faces) == 0 and rep.hull_fraction == 0
    assert "renders nothing opaque" in rep.warnings[0] and "renders nothing opaque" in caplog.text


def test_floating_fragments_are_dropped():
    big, speck = ball((0.0, 0.0, 0.0), 0.18), ball((0.22, 0.22, 0.22), 0.03)
    G = FieldG(lambda x: big(x) + speck(x))
    rep = meshing.MeshReport(64, 0.5, True, 0.5)
    mesh = meshing.extract_mesh(G, PLANES, resolution=64, report=rep)
    assert rep.components_dropped == 1
    assert np.linalg.norm(mesh.vertices, axis=1).max() < 0.2
    kept = meshing.extract_mesh(G, PLANES, resolution=64, min_component=0.0)
    assert np.linalg.norm(kept.vertices, axis=1).max() > 0.3        # the speck is there without the rule


def test_a_field_filling_the_box_warns():
    G = FieldG(lambda x: 200.0 * (x.abs().amax(-1) < 0.345).float())
    rep = meshing.MeshReport(32, 0.5, True, 0.5)
    meshing.extract_mesh(G, PLANES, resolution=32, report=rep)
    assert rep.fills_box and any("fills the framing box" in w for w in rep.warnings)


def test_mesh_that_misses_what_renders_show_warns():
    """A rod of density 1.5 along the view axis renders opaque from the front (alpha 1 - exp(-0.9)) but is
    below the marching-cubes level 0.9 (occupancy 0.78): the mesh holds only the ball and says so."""
    dense = ball((-0.15, 0.0, 0.0), 0.1)
    rod = lambda x: 1.5 * ((x[..., 0] > 0.05) & (x[..., 0] < 0.3) & (x[..., 1].abs() < 0.1)
                           & (x[..., 2].abs() < 0.3)).float()
    G = FieldG(lambda x: dense(x) + rod(x))
    rep = meshing.MeshReport(48, 0.9, True, 0.5)
    mesh = meshing.extract_mesh(G, PLANES, resolution=48, level=0.9, report=rep)
    assert len(mesh.faces) > 0 and mesh.vertices[:, 0].max() < 0.0
    assert rep.silhouette_iou["front"] < 0.6
    assert any("disagrees with the renders" in w and "front" in w for w in rep.warnings), rep.warnings


# ---------------------------------------------------------------- textured GLB

@pytest.fixture(scope="module")
def coloured():
    """The same fit run longer, until the field carries the character's colours."""
    torch.set_num_threads(1)
    return fit_field(steps=150)


def render_glb(path, view, res=CHECK_RES):
    """RGB on white in [0,1] of a GLB file from a view: loaded and drawn by the project's own loader and
    rasteriser (2x supersampled)."""
    from training.data import raster
    from training.data.assets.gltf_loader import load_gltf
    with raster.Rasteriser(res, 2).upload(load_gltf(path, facing="+z")) as scene:
        o = scene.render(view)["rgba"]
    return o[..., :3] * o[..., 3:] + (1 - o[..., 3:])


def psnr(a, b):
    return float(-10 * np.log10(((a - b) ** 2).mean()))


def test_textured_glb_has_uvs_and_a_texture_and_renders_like_the_model(coloured, tmp_path):
    import trimesh
    from training.infer import texture
    G, planes = coloured
    mesh = meshing.extract_mesh(G, planes, resolution=40)
    textured = texture.bake_textured_mesh(G, planes, mesh, size=256, max_faces=4000)
    assert len(textured.faces) <= 4000
    mesh.export(tmp_path / "vc.glb")
    textured.export(tmp_path / "tex.glb")
    back = trimesh.load(tmp_path / "tex.glb", force="mesh")
    assert isinstance(back.visual, trimesh.visual.TextureVisuals)
    uv = np.asarray(back.visual.uv)
    assert uv.shape == (len(back.vertices), 2) and uv.min() >= 0 and uv.max() <= 1
    img = back.visual.material.baseColorTexture
    assert img.size == (256, 256) and np.asarray(img).std() > 5       # a real picture, not one colour
    fr = cameras.get_framing("head")
    views = {x.name: x for x in cameras.view_set("ortho", fr)}
    white = np.ones((CHECK_RES, CHECK_RES, 3))
    for name in ("front", "left"):
        with torch.no_grad():
            ref = G.render(planes, cameras.as_tensor([views[name]]), CHECK_RES, superresolve=False)["image_raw"]
        ref = ((ref[0].permute(1, 2, 0).numpy() + 1) / 2).clip(0, 1)
        p_tex, p_vc = psnr(render_glb(tmp_path / "tex.glb", views[name]), ref), \
            psnr(render_glb(tmp_path / "vc.glb", views[name]), ref)
        assert p_tex >= p_vc - 1.0, (name, p_tex, p_vc)
        assert p_tex > psnr(white, ref) + 6, (name, p_tex, psnr(white, ref))     # it shows the character


def test_texture_bakes_on_a_worker_thread_after_gl_use_on_the_main_one():
    """An EGL context is current in its own thread only: a server's worker thread gets its own."""
    import threading
    from training.data import raster
    from training.infer import texture
    G = FieldG(ball((0.0, 0.0, 0.0), 0.2))
    mesh = meshing.extract_mesh(G, PLANES, resolution=32)
    raster.gl_context()                                      # the main thread's context exists first
    got = {}

    def work():
        try:
            got["mesh"] = texture.bake_textured_mesh(G, PLANES, mesh, size=64, max_faces=500)
        except Exception as e:  # noqa: BLE001
            got["error"] = e
    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert "error" not in got, got.get("error")
    img = np.asarray(got["mesh"].visual.material.baseColorTexture)
    assert np.abs(img.reshape(-1, 3).mean(0) - [230, 102, 51]).max() < 8     # the ball's colour (0.9, 0.4, 0.2)


@pytest.mark.parametrize("framing, want", [("head", 64), ("body", 128)])
def test_hull_pixels_are_at_most_the_carve_pixel(framing, want, monkeypatch):
    """The hull is rendered with pixels of at most CARVE_PIXEL metres: 64 px for the 0.7 m head box, 128 px
    for the 2.1 m body box (64 px there is 3.3 cm a pixel, about an arm's width, and carving cut arms)."""
    box = cameras.get_framing(framing).box
    assert meshing.carve_resolution_for(box) == want and box / want <= meshing.CARVE_PIXEL
    G = build_preset("tiny", framing=framing, variant="TriPlaneGenerator").eval()
    planes = {"planes": torch.zeros(1, 3, 8, 16, 16)}
    seen = []
    real = meshing.render_raw
    monkeypatch.setattr(meshing, "render_raw", lambda G_, p, views, res: seen.append(res) or real(G_, p, views, 8))
    meshing.extract_mesh(G, planes, resolution=16, colors=None)
    assert seen and set(seen) == {want}


def test_mesh_step_sets_where_the_surface_lies():
    """A soft ball, density 200 exp(-(r / 0.1)^2): level 0.5 on 1 - exp(-density * step) lies at the radius
    where density = ln 2 / step: 0.238 m for the published step 1 (outside what renders opaque, so the carve
    stops it near the silhouette, 0.2 m) and 0.163 m for the head framing's step."""
    G = FieldG(lambda x: 200.0 * torch.exp(-(x.norm(dim=-1) / 0.1) ** 2))
    radius = lambda m: np.linalg.norm(m.vertices, axis=1).mean()
    step = meshing.mesh_step_for("head")
    tight = meshing.extract_mesh(G, PLANES, resolution=64, step=step, colors=None)
    loose = meshing.extract_mesh(G, PLANES, resolution=64, step=1.0, colors=None)
    expect = 0.1 * np.sqrt(np.log(200.0 * step / np.log(2.0)))
    assert radius(tight) == pytest.approx(expect, abs=0.012)
    assert radius(loose) > radius(tight) + 0.025
    assert 0 < meshing.mesh_step_for("body") < 1.0 and meshing.mesh_step_for(None) == 1.0


def test_a_faint_field_falls_back_to_the_published_step():
    """Density 5 in a ball: opaque enough to render (a 0.3 m chord gathers alpha 0.78) but below the head
    framing's level (1 - exp(-5 * 0.05) = 0.22): with the framing's step (None) the mesh falls back to step 1
    and says so; asked for the framing's step explicitly, it is empty."""
    G = FieldG(ball((0.0, 0.0, 0.0), 0.15, sigma=5.0))
    rep = meshing.MeshReport(32, 0.5, True, 0.5)
    mesh = meshing.extract_mesh(G, PLANES, resolution=32, step=None, colors=None, report=rep)
    assert len(mesh.faces) > 0 and rep.step == 1.0
    assert any("published step 1" in w for w in rep.warnings), rep.warnings
    strict = meshing.extract_mesh(G, PLANES, resolution=32, step=meshing.mesh_step_for("head"), colors=None)
    assert len(strict.faces) == 0


def test_grid_dilation_on_the_device_is_scipys():
    """mesh_grid dilates its masks with torch (on the generator's device): the same nodes as
    scipy.ndimage.binary_dilation's default 6-neighbour cross, edges of the grid included."""
    from scipy import ndimage
    g = torch.Generator().manual_seed(3)
    for shape, p in (((9, 7, 5), 0.1), ((16, 16, 16), 0.02), ((4, 4, 4), 0.5)):
        mask = torch.rand(shape, generator=g) < p
        mask[0, 0, 0] = mask[-1, -1, -1] = True
        assert np.array_equal(meshing._dilate(mask).numpy(), ndimage.binary_dilation(mask.numpy()))


import numpy as np
import pytest
import torch

from training import cameras


@pytest.mark.parametrize("framing", ["head", "body"])
def test_ortho_rays_parallel_and_cover_box(framing):
    fr = cameras.get_framing(framing)
    views = cameras.view_set("ortho", fr)
    cam = cameras.as_tensor(views)
    res = 16
    o, d = cameras.rays(cam, res)
    # parallel: every ray of a view has the same direction, pointing at the origin's plane
    assert torch.allclose(d, d[:, :1].expand_as(d), atol=1e-6)
    # the image covers exactly the box: pixel centres span box*(1 - 1/res)
    for b in range(len(views)):
        R = cam[b, :16].reshape(4, 4)[:3, :3]
        local = (o[b] - o[b].mean(0)) @ R
        span = local[:, :2].max(0).values - local[:, :2].min(0).values
        assert torch.allclose(span, torch.full((2,), fr.box * (1 - 1 / res)), atol=1e-5)
        # ray start at dist: near..far brackets the box
        t_centre = (o[b].mean(0)).norm()
        assert abs(t_centre - fr.dist) < 1e-5


def test_perspective_rays_pass_through_camera_centre():
    views = cameras.view_set("rgb", "head", char_id="abc")
    cam = cameras.as_tensor(views)
    o, d = cameras.rays(cam, 8)
    centres = cam[:, :16].reshape(-1, 4, 4)[:, :3, 3]
    assert torch.allclose(o, centres[:, None].expand_as(o), atol=1e-6)
    # central ray points at the origin
    o2, d2 = cameras.rays(cam, 1)
    assert torch.allclose(d2[:, 0], -centres / centres.norm(dim=-1, keepdim=True), atol=1e-5)


def test_view_directions_match_convention():
    views = {v.name: v for v in cameras.view_set("ortho", "head")}
    assert np.allclose(views["front"].cam2world()[:3, 3], [0, 0, 1], atol=1e-6)
    assert np.allclose(views["left"].cam2world()[:3, 3], [1, 0, 0], atol=1e-6)
    assert np.allclose(views["right"].cam2world()[:3, 3], [-1, 0, 0], atol=1e-6)
    assert np.allclose(views["back"].cam2world()[:3, 3], [0, 0, -1], atol=1e-6)
    assert np.allclose(views["top"].cam2world()[:3, 3], [0, 1, 0], atol=1e-6)
    # front view: image right is world +X, image down is world -Y
    pose = views["front"].cam2world()
    assert np.allclose(pose[:3, 0], [1, 0, 0]) and np.allclose(pose[:3, 1], [0, -1, 0])
    for v in views.values():
        assert abs(np.linalg.det(v.cam2world()[:3, :3]) - 1) < 1e-6


def test_project_inverts_rays():
    cam = cameras.as_tensor(cameras.view_set("rgb", "body", char_id="x1") + cameras.view_set("ortho", "body"))
    res = 8
    o, d = cameras.rays(cam, res)
    pts = o + 2.7 * d
    uv, depth = cameras.project(pts, cam)
    assert torch.allclose(uv, cameras.pixel_grid(res).expand_as(uv), atol=1e-5)
    assert (depth > 0).all()


def test_grid60_and_spin12():
    grid = cameras.view_set("rgb60", "head")
    assert len(grid) == 60 and grid[42].elev == 0 and grid[42].azim == 0
    spin = cameras.view_set("spin12", "head")
    assert [v.azim for v in spin] == [0, 30, 60, 90, 120, 150, -180, -150, -120, -90, -60, -30]


def test_random_views_seeded():
    a = cameras.view_set("rgb", "head", char_id="c1", seed=0)
    b = cameras.view_set("rgb", "head", char_id="c1", seed=0)
    c = cameras.view_set("rgb", "head", char_id="c2", seed=0)
    assert a == b and a != c and len(a) == 8


def test_mirror_swaps_left_and_right():
    views = {v.name: v for v in cameras.view_set("ortho", "head")}
    left, right, front = (cameras.as_tensor([views[k]]) for k in ("left", "right", "front"))
    assert torch.allclose(cameras.mirror(left), right, atol=1e-6)
    assert torch.allclose(cameras.mirror(front), front, atol=1e-6)
    assert torch.allclose(cameras.mirror(cameras.mirror(left)), left)

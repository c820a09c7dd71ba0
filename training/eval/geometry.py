"""Geometry metrics of the papers (REFERENCE section 5): Chamfer distance and F1@t.

Definition used here (and by PAniC-3D, with its defects fixed):
- both meshes are in framed space (metres) and cropped to the same region
  (the framing's ROI cube, optionally smaller region-of-interest boxes);
  cropping cuts triangles exactly at the box planes;
- the ground truth has its hidden inner surfaces removed first
  (``training.data.raster.visible_faces``; fallback: faces that carry the surface
  points seen in the ground-truth xyza renders, ``faces_near_points``);
- 10,000 area-uniform samples on each mesh (seeded);
- distances from the samples of one mesh to the *surface* of the other
  (closest point on a triangle, not the nearest sample);
- CD = (mean pred->gt + mean gt->pred) / 2 x 100   (metres x 100: 1.33 = 1.33 cm); its two halves are
  reported too: ``cd_acc`` = mean pred->gt x 100 (accuracy: surface where there is none) and ``cd_comp`` =
  mean gt->pred x 100 (completeness: true surface the prediction misses), so CD = (cd_acc + cd_comp) / 2;
- F1@t = 2PR / (P + R) x 100 with precision P = share of prediction samples
  within t of the ground truth, recall R = share of ground-truth samples within
  t of the prediction; t = 0.005 m (F1@5) and 0.01 m (F1@10);
- averaged over characters (the published script kept the last one only).
"""
from __future__ import annotations

import numpy as np
import trimesh

N_SAMPLES = 10_000
F1_THRESHOLDS = {"f1@5": 0.005, "f1@10": 0.01}
DISTANCE_METRICS = ("cd", "cd_acc", "cd_comp")    # centimetres, lower is better; inf for an empty prediction
GEOM_METRICS = (*DISTANCE_METRICS, *F1_THRESHOLDS)


def as_mesh(vertices, faces) -> trimesh.Trimesh:
    return trimesh.Trimesh(np.asarray(vertices, np.float64), np.asarray(faces, np.int64), process=False)


def crop_mesh(mesh: trimesh.Trimesh, lo, hi) -> trimesh.Trimesh:
    """Part of the surface inside the axis-aligned box [lo, hi] (triangles cut at the planes, no caps)."""
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    if len(mesh.faces) == 0:
        return mesh
    v = mesh.vertices
    if np.all((v >= lo) & (v <= hi)):
        return mesh
    out = mesh
    for axis in range(3):
        for origin, sign in ((lo, 1.0), (hi, -1.0)):
            normal = np.zeros(3)
            normal[axis] = sign
            if len(out.faces) == 0:
                return out
            # slice_faces_plane is plain numpy (Trimesh.slice_plane pulls in shapely)
            v, f = trimesh.intersections.slice_faces_plane(out.vertices, out.faces, normal, origin)[:2]
            out = as_mesh(v, f)
    return out


def remove_hidden(mesh: trimesh.Trimesh, visible: np.ndarray) -> trimesh.Trimesh:
    """Keep the faces marked visible (boolean mask over ``mesh.faces``)."""
    visible = np.asarray(visible, bool)
    if visible.shape != (len(mesh.faces),):
        raise ValueError(f"visibility mask has shape {visible.shape}, mesh has {len(mesh.faces)} faces")
    m = mesh.copy()
    m.update_faces(visible)
    m.remove_unreferenced_vertices()
    return m


def faces_near_points(mesh: trimesh.Trimesh, points: np.ndarray, tol: float) -> np.ndarray:
    """Fallback visibility: faces holding a surface point seen in a rendered xyz map (within ``tol``)."""
    mask = np.zeros(len(mesh.faces), bool)
    if len(points) == 0 or len(mesh.faces) == 0:
        return mask
    _, dist, tri = trimesh.proximity.closest_point(mesh, np.asarray(points, np.float64))
    mask[tri[dist <= tol]] = True
    return mask


def sample_surface(mesh: trimesh.Trimesh, n: int = N_SAMPLES, seed: int = 0) -> np.ndarray:
    """n area-uniform points on the surface (seeded)."""
    if len(mesh.faces) == 0 or mesh.area <= 0:
        raise ValueError("empty mesh: nothing to sample")
    pts, _ = trimesh.sample.sample_surface(mesh, n, seed=seed)
    return np.asarray(pts, np.float64)


def point_to_mesh(points: np.ndarray, mesh: trimesh.Trimesh) -> np.ndarray:
    """Distance from each point to the closest point on the mesh surface."""
    _, dist, _ = trimesh.proximity.closest_point(mesh, points)
    return np.asarray(dist, np.float64)


def mesh_distances(pred: trimesh.Trimesh, gt: trimesh.Trimesh, n: int = N_SAMPLES, seed: int = 0,
                   thresholds: dict = F1_THRESHOLDS) -> dict:
    """CD and F1@t for one character (both meshes already hidden-removed and cropped).

    An empty prediction (nothing left in the region) scores CD = inf and F1 = 0:
    reported, not dropped, so a model that outputs nothing cannot look good.
    """
    if len(gt.faces) == 0:
        raise ValueError("ground-truth mesh is empty inside the region")
    if len(pred.faces) == 0 or pred.area <= 0:
        return {**dict.fromkeys(DISTANCE_METRICS, float("inf")), **{k: 0.0 for k in thresholds},
                "empty_prediction": True}
    p = sample_surface(pred, n, seed)
    g = sample_surface(gt, n, seed + 1)
    d_pg = point_to_mesh(p, gt)       # accuracy side
    d_gp = point_to_mesh(g, pred)     # completeness side
    acc, comp = 100.0 * d_pg.mean(), 100.0 * d_gp.mean()
    out = {"cd": (acc + comp) / 2.0, "cd_acc": acc, "cd_comp": comp}
    for name, t in thresholds.items():
        prec, rec = float((d_pg < t).mean()), float((d_gp < t).mean())
        out[name] = 100.0 * (2 * prec * rec / (prec + rec) if prec + rec > 0 else 0.0)
    return out


def geometry_scores(pred: trimesh.Trimesh, gt: trimesh.Trimesh, box, n: int = N_SAMPLES, seed: int = 0,
                    gt_visible: np.ndarray | None = None) -> dict:
    """Hidden-surface removal (if a mask is given) + crop both to ``box`` = (lo, hi) + CD/F1."""
    if gt_visible is not None:
        gt = remove_hidden(gt, gt_visible)
    lo, hi = box
    return mesh_distances(crop_mesh(pred, lo, hi), crop_mesh(gt, lo, hi), n, seed)


def average_over_characters(per_char: list[dict], keys=GEOM_METRICS) -> dict:
    """Mean of each metric over characters (fixes the published 'last character only' F1)."""
    out = {}
    for k in keys:
        vals = [float(d[k]) for d in per_char if k in d and d[k] is not None]
        out[k] = float(np.mean(vals)) if vals else None
    return out

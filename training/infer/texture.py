"""Textured meshes: a UV atlas (xatlas) and a base-colour texture baked from the radiance field.

The marching-cubes mesh is first simplified (quadric decimation, fast-simplification) because the
texture, not the vertex density, carries the colour detail and the unwrap time grows faster than
linearly with the face count.  xatlas cuts the surface into charts and packs them; the rasteriser's
OpenGL context (training/data/raster.py) draws every triangle at its UV position, writing the interpolated
surface point and normal of each texel; the field's colour is sampled there, seen from the axis camera
facing the normal (as the vertex colours are), and the charts are dilated into the gutters so that
bilinear filtering and mip-maps never fetch the empty background.
"""
from __future__ import annotations

import logging
import time

import numpy as np
import torch
from scipy import ndimage

from training.infer import meshing

log = logging.getLogger(__name__)

_VERT = """
#version 330
in vec2 in_uv;
in vec3 in_pos;
in vec3 in_normal;
out vec3 v_pos;
out vec3 v_normal;
void main() {
    v_pos = in_pos;
    v_normal = in_normal;
    gl_Position = vec4(in_uv * 2.0 - 1.0, 0.0, 1.0);
}
"""
_FRAG = """
#version 330
in vec3 v_pos;
in vec3 v_normal;
layout(location = 0) out vec4 out_pos;
layout(location = 1) out vec4 out_normal;
void main() {
    out_pos = vec4(v_pos, 1.0);
    out_normal = vec4(v_normal, 1.0);
}
"""


def simplify(mesh, max_faces: int):
    """Quadric decimation to at most ``max_faces`` faces (the mesh itself when already smaller)."""
    if len(mesh.faces) <= max_faces:
        return mesh
    out = mesh.simplify_quadric_decimation(face_count=int(max_faces))
    out.remove_unreferenced_vertices()
    return out


def unwrap(vertices: np.ndarray, faces: np.ndarray, size: int = 1024, padding: int = 4):
    """xatlas charts packed into a size x size atlas -> (vmapping [M], faces [F,3], uv [M,2] in [0,1],
    v down: glTF's convention, row 0 of the image at v = 0)."""
    import xatlas
    atlas = xatlas.Atlas()
    atlas.add_mesh(np.ascontiguousarray(vertices, np.float32), np.ascontiguousarray(faces, np.uint32))
    charts = xatlas.ChartOptions()
    charts.max_iterations = 1          # one growing pass: the charts of a smooth field surface are good enough
    pack = xatlas.PackOptions()
    pack.resolution, pack.padding, pack.bilinear, pack.blockAlign = int(size), int(padding), True, True
    atlas.generate(charts, pack)
    vmap, idx, uv = atlas[0]
    return vmap.astype(np.int64), idx.astype(np.int64), uv.astype(np.float32)


def rasterise_uv(uv: np.ndarray, faces: np.ndarray, positions: np.ndarray, normals: np.ndarray, size: int):
    """Per texel of a size x size atlas: (surface point [S,S,3], normal [S,S,3], covered [S,S] bool);
    row 0 is v = 0."""
    import moderngl
    from training.data.raster import gl_context
    ctx = gl_context()
    prog = ctx.program(vertex_shader=_VERT, fragment_shader=_FRAG)
    data = np.concatenate([uv, positions, normals], 1).astype("f4")
    vbo = ctx.buffer(np.ascontiguousarray(data).tobytes())
    ibo = ctx.buffer(np.ascontiguousarray(faces, np.uint32).tobytes())
    vao = ctx.vertex_array(prog, [(vbo, "2f 3f 3f", "in_uv", "in_pos", "in_normal")], ibo)
    atts = [ctx.texture((size, size), 4, dtype="f4") for _ in range(2)]
    fbo = ctx.framebuffer(color_attachments=atts)
    try:
        fbo.use()
        ctx.viewport = (0, 0, size, size)
        fbo.clear(0.0, 0.0, 0.0, 0.0)
        ctx.disable(moderngl.DEPTH_TEST | moderngl.CULL_FACE | moderngl.BLEND)
        vao.render(moderngl.TRIANGLES)
        # framebuffer row 0 is clip y = -1, i.e. v = 0: the image's first row, no flip
        pos = np.frombuffer(atts[0].read(), np.float32).reshape(size, size, 4)
        nor = np.frombuffer(atts[1].read(), np.float32).reshape(size, size, 4)
    finally:
        for o in (vao, vbo, ibo, fbo, *atts, prog):
            o.release()
    return pos[..., :3].copy(), nor[..., :3].copy(), pos[..., 3] > 0.5


def dilate_into_gutters(image: np.ndarray, covered: np.ndarray) -> np.ndarray:
    """Every uncovered texel takes the colour of the nearest covered one."""
    if covered.all() or not covered.any():
        return image
    _, (iy, ix) = ndimage.distance_transform_edt(~covered, return_indices=True)
    return image[iy, ix]


@torch.no_grad()
def bake_textured_mesh(G, planes, mesh, size: int = 1024, max_faces: int = 20000, chunk: int = 2 ** 18,
                       renders: dict | None = None, seconds: dict | None = None):
    """A trimesh with UVs and a baked base-colour texture (PIL image in its PBR material) for ``mesh``
    (framed coordinates), simplified to at most ``max_faces`` faces.  Texels take their colour as the
    vertex colours do (meshing.render_colors: from the axis ortho renders, ``renders``, completed here
    when views are missing; the field's own colour where a texel is hidden in its render)."""
    import trimesh
    from PIL import Image
    sec = seconds if seconds is not None else {}
    t = time.perf_counter()
    low = simplify(mesh, max_faces)
    sec["simplify"] = time.perf_counter() - t
    t = time.perf_counter()
    vmap, faces, uv = unwrap(low.vertices, low.faces, size)
    sec["unwrap"] = time.perf_counter() - t
    t = time.perf_counter()
    verts = np.asarray(low.vertices, np.float32)[vmap]
    normals = np.asarray(low.vertex_normals, np.float32)[vmap]
    pos, nor, covered = rasterise_uv(uv, faces, verts, normals, size)
    n = np.linalg.norm(nor, axis=-1, keepdims=True)
    nor = np.where(n > 1e-8, nor / np.maximum(n, 1e-8), 0.0)
    rgb = np.ones((size, size, 3), np.uint8) * 255
    if covered.any():
        renders = meshing.complete_renders(G, planes, renders, meshing.COLOR_VIEWS, 64)
        col, _ = meshing.render_colors(G, planes, renders, pos[covered], nor[covered], G.field.box_warp, chunk)
        rgb[covered] = col[:, :3]
    rgb = dilate_into_gutters(rgb, covered)
    sec["bake"] = time.perf_counter() - t
    image = Image.fromarray(rgb, "RGB")
    material = trimesh.visual.material.PBRMaterial(name="baked", baseColorTexture=image, metallicFactor=0.0,
                                                   roughnessFactor=1.0, doubleSided=True)
    # trimesh keeps OpenGL's v-up UVs and flips them when writing glTF
    visual = trimesh.visual.TextureVisuals(uv=np.stack([uv[:, 0], 1.0 - uv[:, 1]], 1), material=material)
    out = trimesh.Trimesh(vertices=verts, faces=faces, vertex_normals=normals, visual=visual, process=False)
    out.metadata["texture_coverage"] = float(covered.mean())
    return out


__all__ = ["simplify", "unwrap", "rasterise_uv", "dilate_into_gutters", "bake_textured_mesh"]

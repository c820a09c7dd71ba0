"""Ground-truth rasteriser: unlit OpenGL renders of a Character (moderngl, headless EGL).

One GL context per process (creating one is slow), one upload per character,
many views per upload.  Cameras come from ``training.cameras`` and the GL
projection is built from the same intrinsics and near/far, so pixel centres
sit at ``(i + 0.5) / res`` (u right, v down) exactly as ``cameras.rays`` and
``cameras.project`` assume.

Shading (REFERENCE section 3): colour = texture x base colour factor x vertex
colour, no lighting; MASK materials discard below their cutoff; BLEND
materials are drawn after the opaque ones with (premultiplied) alpha
blending and no depth writes; every face is double-sided.  Images are
rendered at ``supersample`` x the output size and box-filtered down on
premultiplied values, so edges are anti-aliased and alpha is coverage.
"""
from __future__ import annotations

import dataclasses
import math
import threading

import numpy as np

from training import cameras
from training.data.assets.character import Character
from training.errors import UserError


# ---------------------------------------------------------------- GL context

# one context per thread: an EGL context is current in the thread that created it only, and a server
# (the web demo) runs its jobs on worker threads
_LOCAL = threading.local()


def gl_context():
    """This thread's headless context (EGL: Mesa llvmpipe on CPU, the NVIDIA driver on GPUs)."""
    ctx = getattr(_LOCAL, "ctx", None)
    if ctx is None:
        import moderngl
        try:
            ctx = moderngl.create_standalone_context(backend="egl", require=330)
        except Exception as e:  # noqa: BLE001 - any driver failure is an environment problem
            raise UserError(f"OpenGL (EGL): cannot create a headless context ({e}); "
                            "install libegl1 + libgl1-mesa-dri (make/setup does) or an NVIDIA driver") from None
        _LOCAL.ctx = ctx
    return ctx


def gl_renderer_name() -> str:
    return gl_context().info.get("GL_RENDERER", "?")


# ---------------------------------------------------------------- camera -> GL

def view_matrices(cam25) -> tuple[np.ndarray, np.ndarray]:
    """(world->camera 4x4 in OpenCV axes, camera->clip 4x4) for a 25-d camera.

    Clip y is 2v - 1 with v pointing down, so GL's framebuffer row 0 is the
    image's top row and a plain read-back needs no flip.
    """
    c = np.asarray(cam25, np.float64).reshape(-1)
    c2w, K = c[:16].reshape(4, 4), c[16:25].reshape(3, 3)
    w2c = np.linalg.inv(c2w)
    return w2c, K


def projection(K: np.ndarray, near: float, far: float) -> np.ndarray:
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    P = np.zeros((4, 4))
    if fx < 0:  # orthographic: u = |fx| x + cx
        P[0, 0], P[0, 3] = 2 * abs(fx), 2 * cx - 1
        P[1, 1], P[1, 3] = 2 * abs(fy), 2 * cy - 1
        P[2, 2], P[2, 3] = 2 / (far - near), -(far + near) / (far - near)
        P[3, 3] = 1
    else:       # perspective: u = fx x / z + cx
        P[0, 0], P[0, 2] = 2 * fx, 2 * cx - 1
        P[1, 1], P[1, 2] = 2 * fy, 2 * cy - 1
        P[2, 2], P[2, 3] = (far + near) / (far - near), -2 * far * near / (far - near)
        P[3, 2] = 1
    return P


def _camera(view) -> tuple[np.ndarray, np.ndarray, float]:
    """View (or (cam25, near, far, box)) -> (world->cam, world->clip, box)."""
    if isinstance(view, cameras.View):
        cam, near, far, box = view.cam25(), view.near, view.far, view.box
    else:
        cam, near, far, box = view
    w2c, K = view_matrices(cam)
    return w2c, projection(K, near, far) @ w2c, box


# ---------------------------------------------------------------- shaders

_VERT = """
#version 330
uniform mat4 u_world2clip;
uniform mat4 u_world2cam;
uniform vec3 u_origin;
in vec3 in_pos;
in vec2 in_uv;
in vec4 in_color;
out vec3 v_framed;
out vec3 v_cam;
out vec2 v_uv;
out vec4 v_color;
void main() {
    vec3 p = in_pos - u_origin;
    v_framed = p;
    v_cam = (u_world2cam * vec4(p, 1.0)).xyz;
    v_uv = in_uv;
    v_color = in_color;
    gl_Position = u_world2clip * vec4(p, 1.0);
}
"""

# Outputs: 0 colour (premultiplied), 1 framed xyz (premultiplied) + coverage,
# 2 camera-space normal facing the viewer + view depth, 3 object id (lines only).
# In the BLEND pass outputs 2 and 3 are vec4(0): with blend (ONE, ONE_MINUS_SRC_ALPHA)
# that leaves them untouched, so contours come from the solid surfaces.
_FRAG = """
#version 330
uniform sampler2D u_tex;
uniform bool u_has_tex;
uniform vec4 u_factor;
uniform int u_mode;        // 0 OPAQUE, 1 MASK, 2 BLEND
uniform float u_cutoff;
uniform float u_object;
uniform bool u_ortho;
in vec3 v_framed;
in vec3 v_cam;
in vec2 v_uv;
in vec4 v_color;
layout(location = 0) out vec4 f_color;
layout(location = 1) out vec4 f_xyza;
layout(location = 2) out vec4 f_aux;
layout(location = 3) out vec4 f_id;
void main() {
    vec4 c = u_factor * v_color;
    if (u_has_tex) c *= texture(u_tex, v_uv);
    if (u_mode == 1) { if (c.a < u_cutoff) discard; c.a = 1.0; }
    else if (u_mode == 0) { c.a = 1.0; }
    else if (c.a < 1.0 / 512.0) discard;
    float a = clamp(c.a, 0.0, 1.0);
    f_color = vec4(c.rgb * a, a);
    f_xyza = vec4(v_framed * a, a);
    if (u_mode == 2) { f_aux = vec4(0.0); f_id = vec4(0.0); return; }
    vec3 n = normalize(cross(dFdx(v_cam), dFdy(v_cam)));   // flat: creases are face-normal jumps
    vec3 to_eye = u_ortho ? vec3(0.0, 0.0, -1.0) : -v_cam;
    if (dot(n, to_eye) < 0.0) n = -n;   // double-sided: the side facing the viewer
    f_aux = vec4(n, v_cam.z);
    f_id = vec4(u_object, 0.0, 0.0, 1.0);
}
"""

# Face ids for visibility: global face index + 1 (0 = background).
_ID_FRAG = """
#version 330
uniform sampler2D u_tex;
uniform bool u_has_tex;
uniform vec4 u_factor;
uniform int u_mode;
uniform float u_cutoff;
uniform uint u_face_offset;
in vec2 v_uv;
in vec4 v_color;
out uint f_face;
void main() {
    vec4 c = u_factor * v_color;
    if (u_has_tex) c *= texture(u_tex, v_uv);
    if (u_mode != 0 && c.a < u_cutoff) discard;
    f_face = u_face_offset + uint(gl_PrimitiveID) + 1u;
}
"""

# Box-filter downsample on the GPU (reading back the supersampled buffers costs more than drawing):
# one fullscreen triangle, each output pixel averages its ss x ss block of premultiplied samples.
_DOWN_VERT = """
#version 330
void main() {
    vec2 p = vec2((gl_VertexID << 1) & 2, gl_VertexID & 2);
    gl_Position = vec4(p * 2.0 - 1.0, 0.0, 1.0);
}
"""
_DOWN_FRAG = """
#version 330
uniform sampler2D u_color;
uniform sampler2D u_xyza;
uniform int u_ss;
layout(location = 0) out vec4 f_color;
layout(location = 1) out vec4 f_xyza;
void main() {
    ivec2 p = ivec2(gl_FragCoord.xy) * u_ss;
    vec4 c = vec4(0.0), x = vec4(0.0);
    for (int j = 0; j < u_ss; ++j)
        for (int i = 0; i < u_ss; ++i) {
            c += texelFetch(u_color, p + ivec2(i, j), 0);
            x += texelFetch(u_xyza, p + ivec2(i, j), 0);
        }
    float n = float(u_ss * u_ss);
    c /= n;
    x /= n;
    // back to straight alpha / plain positions (coverage-weighted means of the samples)
    f_color = vec4(c.a > 1e-6 ? clamp(c.rgb / c.a, 0.0, 1.0) : vec3(0.0), clamp(c.a, 0.0, 1.0));
    f_xyza = vec4(x.a > 1e-6 ? x.xyz / x.a : vec3(0.0), clamp(x.a, 0.0, 1.0));
}
"""

# Toon contour lines, at the supersampled resolution: a pixel is an edge when, against one of its
# 4 neighbours, the object id changes (silhouettes included), the view depth jumps by more than
# u_depth_tol or the flat normals turn by more than the crease angle.  Edges mark both sides of a
# discontinuity (2 px); pixels within u_radius of an edge get the opaque line colour.
_LINE_FRAG = """
#version 330
uniform sampler2D u_color;
uniform sampler2D u_aux;     // normal (xyz), view depth (w)
uniform sampler2D u_obj;     // object id + 1 (0 = background)
uniform float u_depth_tol;
uniform float u_cos_crease;
uniform int u_radius;
uniform vec3 u_line;
out vec4 f_color;
ivec2 size;
bool differ(ivec2 p, ivec2 q) {
    q = clamp(q, ivec2(0), size - 1);
    float oa = texelFetch(u_obj, p, 0).r, ob = texelFetch(u_obj, q, 0).r;
    if (abs(oa - ob) > 0.5) return true;
    if (oa < 0.5) return false;
    vec4 a = texelFetch(u_aux, p, 0), b = texelFetch(u_aux, q, 0);
    return abs(a.w - b.w) > u_depth_tol || dot(a.xyz, b.xyz) < u_cos_crease;
}
bool edge(ivec2 p) {
    return differ(p, p + ivec2(1, 0)) || differ(p, p - ivec2(1, 0))
        || differ(p, p + ivec2(0, 1)) || differ(p, p - ivec2(0, 1));
}
void main() {
    size = textureSize(u_obj, 0);
    ivec2 p = ivec2(gl_FragCoord.xy);
    bool line = false;
    for (int j = -u_radius; j <= u_radius && !line; ++j)
        for (int i = -u_radius; i <= u_radius && !line; ++i) {
            ivec2 q = p + ivec2(i, j);
            if (i * i + j * j <= u_radius * u_radius && all(greaterThanEqual(q, ivec2(0)))
                && all(lessThan(q, size)))
                line = edge(q);
        }
    f_color = line ? vec4(u_line, 1.0) : texelFetch(u_color, p, 0);   // premultiplied
}
"""

_ALPHA_MODES = {"OPAQUE": 0, "MASK": 1, "BLEND": 2}


# ---------------------------------------------------------------- scene

@dataclasses.dataclass
class _Draw:
    vao: object
    id_vao: object
    texture: object | None
    factor: tuple
    mode: int
    cutoff: float
    object_id: float
    face_offset: int
    num_faces: int
    centroid: np.ndarray      # framed space; orders blended primitives back to front per view


class Scene:
    """A character's meshes and textures on the GPU; render as many views as wanted, then release()."""

    def __init__(self, rast: "Rasteriser", character: Character, origin=(0.0, 0.0, 0.0)):
        self.rast, self.character = rast, character
        self.origin = np.asarray(origin, np.float32).reshape(3)
        ctx = rast.ctx
        self._objects, self.draws = [], []
        textures = {}
        offset = 0
        for pi, prim in enumerate(character.primitives):
            n_faces = len(prim.faces)
            if n_faces == 0:
                continue
            mat = character.materials[prim.material] if 0 <= prim.material < len(character.materials) else None
            pos = np.ascontiguousarray(prim.positions, np.float32)
            n = pos.shape[0]
            uv = np.zeros((n, 2), np.float32) if prim.uvs is None else np.ascontiguousarray(prim.uvs, np.float32)
            col = np.ones((n, 4), np.float32) if prim.colors is None else np.ascontiguousarray(prim.colors, np.float32)
            if col.shape[1] == 3:
                col = np.concatenate([col, np.ones((n, 1), np.float32)], 1)
            bufs = [ctx.buffer(a.tobytes()) for a in (pos, uv, col)]
            ibo = ctx.buffer(np.ascontiguousarray(prim.faces, np.uint32).tobytes())
            vao = ctx.vertex_array(rast.prog, [(bufs[0], "3f", "in_pos"), (bufs[1], "2f", "in_uv"),
                                               (bufs[2], "4f", "in_color")], ibo)
            id_vao = ctx.vertex_array(rast.id_prog, [(bufs[0], "3f", "in_pos"), (bufs[1], "2f", "in_uv"),
                                                     (bufs[2], "4f", "in_color")], ibo)
            self._objects += bufs + [ibo, vao, id_vao]
            tex = None
            if mat is not None and mat.texture is not None and prim.uvs is not None:
                key = id(mat.texture)
                if key not in textures:
                    textures[key] = self._texture(mat.texture)
                tex = textures[key]
            factor = tuple(float(x) for x in (mat.base_color_factor if mat is not None else np.ones(4)))
            mode = _ALPHA_MODES.get((mat.alpha_mode if mat is not None else "OPAQUE").upper(), 0)
            cutoff = float(mat.alpha_cutoff) if mat is not None else 0.5
            centroid = pos[np.unique(prim.faces)].mean(0) - self.origin
            self.draws.append(_Draw(vao, id_vao, tex, factor, mode, cutoff, float(pi + 1), offset, n_faces, centroid))
            offset += n_faces
        self._objects += list(textures.values())

    def _texture(self, img: np.ndarray):
        img = np.asarray(img)
        if img.dtype != np.uint8:
            img = np.clip(img * (255.0 if img.dtype.kind == "f" else 1.0), 0, 255).astype(np.uint8)
        if img.ndim == 2:
            img = img[..., None]
        if img.shape[2] == 1:
            img = np.repeat(img, 3, 2)
        if img.shape[2] == 3:
            img = np.concatenate([img, np.full(img.shape[:2] + (1,), 255, np.uint8)], 2)
        ctx = self.rast.ctx
        # glTF UV (0,0) is the image's top-left = first row of the array = GL texture row 0
        tex = ctx.texture((img.shape[1], img.shape[0]), 4, np.ascontiguousarray(img).tobytes())
        tex.build_mipmaps()
        import moderngl
        tex.filter = (moderngl.LINEAR_MIPMAP_LINEAR, moderngl.LINEAR)
        tex.repeat_x = tex.repeat_y = True
        return tex

    def render(self, view, *, lines: bool = False, line_width: float | None = None, **kw) -> dict:
        return self.rast.render(self, view, lines=lines, line_width=line_width, **kw)

    def release(self):
        for o in self._objects:
            o.release()
        self._objects, self.draws = [], []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


# ---------------------------------------------------------------- rasteriser

def encode_xyza(xyz: np.ndarray, alpha: np.ndarray, box: float) -> np.ndarray:
    """Framed xyz (metres) + coverage -> xyza colours ((p + box/2) / box, clipped to [0, 1])."""
    enc = (np.asarray(xyz, np.float32) + np.float32(box / 2)) * np.float32(1 / box)
    np.clip(enc, 0, 1, out=enc)
    enc *= (alpha > 0)[..., None]
    return np.dstack([enc, np.asarray(alpha, np.float32)])


def decode_xyza(xyza: np.ndarray, box: float) -> tuple[np.ndarray, np.ndarray]:
    """xyza image (floats in [0,1] or uint8) -> framed xyz (metres), alpha in [0,1]."""
    x = np.asarray(xyza, np.float32)
    if np.asarray(xyza).dtype == np.uint8:
        x = x / 255.0
    return x[..., :3] * box - box / 2, x[..., 3]


def to_uint8(img: np.ndarray) -> np.ndarray:
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


LINE_COLOR = (0.08, 0.06, 0.07)


class Rasteriser:
    """Renders uploaded Scenes at ``size`` px (``supersample`` x internally)."""

    def __init__(self, size: int = 512, supersample: int = 2):
        if size < 1 or supersample < 1:
            raise ValueError("size and supersample must be positive")
        self.size, self.ss = int(size), int(supersample)
        self.ctx = gl_context()
        self.prog = self.ctx.program(vertex_shader=_VERT, fragment_shader=_FRAG)
        self.id_prog = self.ctx.program(vertex_shader=_VERT, fragment_shader=_ID_FRAG)
        self.down_prog = self.ctx.program(vertex_shader=_DOWN_VERT, fragment_shader=_DOWN_FRAG)
        self.down_vao = self.ctx.vertex_array(self.down_prog, [])
        self.line_prog = self.ctx.program(vertex_shader=_DOWN_VERT, fragment_shader=_LINE_FRAG)
        self.line_vao = self.ctx.vertex_array(self.line_prog, [])
        self._fbos = {}

    def upload(self, character: Character, origin=(0.0, 0.0, 0.0)) -> Scene:
        """Put a character on the GPU; ``origin`` is subtracted from positions (framed space)."""
        return Scene(self, character, origin)

    def _fbo(self, kind: str, res: int):
        key = (kind, res)
        if key not in self._fbos:
            ctx = self.ctx
            # half-float colour: premultiplied values keep their precision at low coverage
            if kind == "main":     # colour, xyza
                atts = [ctx.texture((res, res), 4, dtype="f2"), ctx.texture((res, res), 4, dtype="f4")]
            elif kind == "full":   # + normal/depth and object id, for contour lines and depth
                atts = [ctx.texture((res, res), 4, dtype="f2"), ctx.texture((res, res), 4, dtype="f4"),
                        ctx.texture((res, res), 4, dtype="f4"), ctx.texture((res, res), 4, dtype="f4")]
            elif kind == "lines":  # contour lines composited over the colour
                atts = [ctx.texture((res, res), 4, dtype="f2")]
            elif kind == "down":
                atts = [ctx.texture((res, res), 4, dtype="f4"), ctx.texture((res, res), 4, dtype="f4")]
            else:
                atts = [ctx.texture((res, res), 1, dtype="u4")]
            depth = ctx.depth_renderbuffer((res, res))
            self._fbos[key] = (ctx.framebuffer(color_attachments=atts, depth_attachment=depth), atts, depth)
        return self._fbos[key]

    def _set_common(self, prog, scene, view):
        w2c, w2clip, box = _camera(view)
        prog["u_world2clip"].write(w2clip.T.astype("f4").tobytes())
        if "u_world2cam" in prog:
            prog["u_world2cam"].write(w2c.T.astype("f4").tobytes())
        prog["u_origin"].value = tuple(float(x) for x in scene.origin)
        return w2c, box

    @staticmethod
    def _set_material(prog, d: _Draw):
        if d.texture is not None:
            d.texture.use(0)
            prog["u_tex"].value = 0
        prog["u_has_tex"].value = d.texture is not None
        prog["u_factor"].value = d.factor
        prog["u_mode"].value = d.mode
        prog["u_cutoff"].value = d.cutoff

    def render(self, scene: Scene, view, *, lines: bool = False, line_width: float | None = None,
               depth: bool = False, crease_deg: float = 60.0, depth_tol: float = 0.02) -> dict:
        """Render one view (a ``cameras.View`` or ``(cam25, near, far, box)``).

        Returns float32 arrays at ``size``: ``rgba`` (straight alpha, transparent
        background), ``xyza`` (encoded framed position + coverage), ``xyz`` (framed
        metres, alpha-weighted mean of the covered samples); with ``depth``, ``depth``
        (view depth of the nearest solid surface at the pixel's centre sample, 0 on
        background); with ``lines``, ``lines_rgba`` (dark contour lines composited
        over ``rgba``; width in output pixels, default ``max(1, size/512)``).
        """
        import moderngl
        ctx, res, ss = self.ctx, self.size * self.ss, self.ss
        fbo, atts, _ = self._fbo("full" if (lines or depth) else "main", res)
        fbo.use()
        ctx.viewport = (0, 0, res, res)
        fbo.clear(0.0, 0.0, 0.0, 0.0, depth=1.0)
        ctx.disable(moderngl.CULL_FACE)
        ctx.enable(moderngl.DEPTH_TEST)
        prog = self.prog
        w2c, box = self._set_common(prog, scene, view)
        ortho = view.ortho if isinstance(view, cameras.View) else bool(np.asarray(view[0]).reshape(-1)[16] < 0)
        prog["u_ortho"].value = ortho
        ctx.disable(moderngl.BLEND)
        ctx.depth_mask = True
        blending = False
        solid = [d for d in scene.draws if d.mode != 2]
        # blended primitives far to near (per primitive, not per triangle)
        blended = sorted((d for d in scene.draws if d.mode == 2), key=lambda d: -(w2c[2, :3] @ d.centroid))
        for d in solid + blended:
            if d.mode == 2 and not blending:
                ctx.enable(moderngl.BLEND)
                ctx.blend_func = moderngl.ONE, moderngl.ONE_MINUS_SRC_ALPHA
                ctx.depth_mask = False
                blending = True
            self._set_material(prog, d)
            prog["u_object"].value = d.object_id
            d.vao.render(moderngl.TRIANGLES)
        ctx.disable(moderngl.BLEND)
        ctx.depth_mask = True

        # downsample on the GPU, read back only the output-size buffers
        rgba, xp = self._downsample(atts[0], atts[1])
        out = {"rgba": rgba, "xyz": xp[..., :3], "xyza": encode_xyza(xp[..., :3], xp[..., 3], box)}
        if depth:
            aux = np.frombuffer(atts[2].read(), np.float32).reshape(res, res, 4)
            c = ss // 2
            out["depth"] = aux[c::ss, c::ss, 3].copy()
        if lines:
            lfbo, latts, _ = self._fbo("lines", res)
            lfbo.use()
            ctx.viewport = (0, 0, res, res)
            ctx.disable(moderngl.DEPTH_TEST)
            for unit, tex in enumerate(atts[:1] + atts[2:4]):
                tex.use(unit)
            lp = self.line_prog
            lp["u_color"].value, lp["u_aux"].value, lp["u_obj"].value = 0, 1, 2
            lp["u_depth_tol"].value = depth_tol * box
            lp["u_cos_crease"].value = math.cos(math.radians(crease_deg))
            # an edge is 2 px thick before dilation; lines are line_width output pixels wide
            lw = max(1.0, self.size / 512.0) if line_width is None else line_width
            lp["u_radius"].value = max(0, int(math.floor(lw * ss / 2 - 1 + 0.5)))
            lp["u_line"].value = LINE_COLOR
            self.line_vao.render(moderngl.TRIANGLES, vertices=3)
            ctx.enable(moderngl.DEPTH_TEST)
            out["lines_rgba"] = self._downsample(latts[0], None)[0]
        return out

    def _downsample(self, color_tex, xyza_tex):
        """Box-filter the supersampled colour (and xyza) textures; read back straight-alpha float32."""
        import moderngl
        ctx, s = self.ctx, self.size
        dfbo, datts, _ = self._fbo("down", s)
        dfbo.use()
        ctx.viewport = (0, 0, s, s)
        ctx.disable(moderngl.DEPTH_TEST)
        color_tex.use(0)
        (xyza_tex or color_tex).use(1)
        self.down_prog["u_color"].value, self.down_prog["u_xyza"].value = 0, 1
        self.down_prog["u_ss"].value = self.ss
        self.down_vao.render(moderngl.TRIANGLES, vertices=3)
        ctx.enable(moderngl.DEPTH_TEST)
        rgba = np.empty((s, s, 4), np.float32)
        datts[0].read_into(rgba)
        xp = None
        if xyza_tex is not None:
            xp = np.empty((s, s, 4), np.float32)
            datts[1].read_into(xp)
        return rgba, xp

    def face_ids(self, scene: Scene, view, res: int | None = None) -> np.ndarray:
        """[res,res] uint32 image of global face index + 1 (0 = background), alpha-tested."""
        import moderngl
        ctx = self.ctx
        res = res or self.size * self.ss
        fbo, atts, _ = self._fbo("id", res)
        fbo.use()
        ctx.viewport = (0, 0, res, res)
        fbo.clear(0.0, 0.0, 0.0, 0.0, depth=1.0)
        ctx.disable(moderngl.BLEND)
        ctx.disable(moderngl.CULL_FACE)
        ctx.enable(moderngl.DEPTH_TEST)
        ctx.depth_mask = True
        prog = self.id_prog
        self._set_common(prog, scene, view)
        for d in scene.draws:
            self._set_material(prog, d)
            prog["u_face_offset"].value = d.face_offset
            d.id_vao.render(moderngl.TRIANGLES)
        return np.frombuffer(atts[0].read(), np.uint32).reshape(res, res)


def rasteriser(size: int = 512, supersample: int = 2) -> Rasteriser:
    """A cached Rasteriser per (size, supersample) sharing this thread's GL context."""
    cache = _LOCAL.__dict__.setdefault("rasters", {})
    key = (size, supersample)
    if key not in cache:
        cache[key] = Rasteriser(size, supersample)
    return cache[key]


def render_views(character: Character, views, *, size: int = 512, supersample: int = 2,
                 origin=(0.0, 0.0, 0.0), **render_kw) -> list[dict]:
    """Convenience: upload once, render every view (``Rasteriser.render`` options), release."""
    with rasteriser(size, supersample).upload(character, origin) as scene:
        return [scene.render(v, **render_kw) for v in views]


def visibility_views(framing: str = "body") -> list:
    """Default views for ``visible_faces``: the 60-view grid, the ortho set and straight up/down."""
    fr = cameras.get_framing(framing)
    extra = [cameras.make_view("bottom", -90.0, 0.0, fr, True)]
    return cameras.view_set("rgb60", fr) + cameras.view_set("ortho", fr) + extra


def visible_faces(character: Character, views=None, *, res: int = 1024, origin=(0.0, 0.0, 0.0),
                  framing: str = "body") -> list[np.ndarray]:
    """Per primitive, a boolean mask of faces seen (alpha-tested, depth-tested) from any view.

    ``views`` are ``cameras.View`` objects (or ``(cam25, near, far, box)``) in the
    character's framed space (positions minus ``origin``); default
    ``visibility_views(framing)``.  Faces smaller than a pixel at ``res`` can be
    missed: raise ``res`` for finely tessellated meshes.
    """
    views = visibility_views(framing) if views is None else views
    r = rasteriser(512, 2)
    seen = np.zeros(character.num_faces() + 1, bool)
    with r.upload(character, origin) as scene:
        for v in views:
            ids = r.face_ids(scene, v, res)
            seen[np.unique(ids)] = True
    seen = seen[1:]
    out, off = [], 0
    for prim in character.primitives:
        out.append(seen[off:off + len(prim.faces)].copy())
        off += len(prim.faces)
    return out

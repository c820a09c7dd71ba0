"""VRM 0.x / 1.0, glTF and GLB -> Character (canonical frame, bind pose).

The GLB container is read here (so truncation gives a precise message) and
the JSON is walked as plain dicts: VRM extensions and extras are free-form,
and pygltflib's typed objects add nothing for them.
Every mesh primitive instanced by the scene becomes one Primitive with node
world transforms (or its skin, for skinned meshes) applied, so positions are
what a viewer shows in the rest pose.  VRM 0.x faces -Z and is turned 180 deg
about Y; VRM 1.0 and plain glTF already face +Z.
"""
from __future__ import annotations

import base64
import io
import json
import struct
import urllib.parse
from pathlib import Path

import numpy as np

from training.data.assets.character import Character, Material, Primitive, Skeleton
from training.errors import UserError, fail

_DTYPES = {5120: np.int8, 5121: np.uint8, 5122: np.int16, 5123: np.uint16, 5125: np.uint32, 5126: np.float32}
_NCOMP = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT2": 4, "MAT3": 9, "MAT4": 16}
_ROT_Y180 = np.diag([-1.0, 1.0, -1.0, 1.0])

# MToon (VRM 0.x) _BlendMode -> glTF alpha mode
_MTOON_BLEND = {0: "OPAQUE", 1: "MASK", 2: "BLEND", 3: "BLEND"}


# ----------------------------------------------------------------------------- container

def _read_container(path: Path) -> tuple[dict, bytes | None]:
    """Return (json document, GLB binary chunk or None)."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise fail(path, f"cannot read ({e.strerror or e})") from None
    if data[:4] == b"glTF":
        if len(data) < 20:
            raise fail(path, "truncated GLB (no header)")
        _, version, length = struct.unpack_from("<4sII", data, 0)
        if version != 2:
            raise fail(path, f"unsupported glTF container version {version}")
        if length > len(data):
            raise fail(path, f"truncated GLB (header says {length} bytes, file has {len(data)})")
        doc, binary, off = None, None, 12
        while off + 8 <= length:
            clen, ctype = struct.unpack_from("<I4s", data, off)
            chunk = data[off + 8: off + 8 + clen]
            if len(chunk) != clen:
                raise fail(path, "truncated GLB chunk")
            if ctype == b"JSON" and doc is None:
                doc = _parse_json(path, chunk)
            elif ctype == b"BIN\x00" and binary is None:
                binary = chunk
            off += 8 + clen + (-clen % 4 if off + 8 + clen < length else 0)
        if doc is None:
            raise fail(path, "GLB has no JSON chunk")
        return doc, binary
    head = data[:64].lstrip()
    if not head.startswith(b"{"):
        raise fail(path, "not a glTF/GLB/VRM file (no 'glTF' magic and no JSON)")
    return _parse_json(path, data), None


def _parse_json(path: Path, raw: bytes) -> dict:
    try:
        doc = json.loads(raw.decode("utf-8").rstrip(" \x00"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise fail(path, f"corrupt glTF JSON ({e})") from None
    if not isinstance(doc, dict) or "asset" not in doc:
        raise fail(path, "not a glTF document (no 'asset')")
    return doc


def _data_uri(uri: str) -> bytes | None:
    if not uri.startswith("data:"):
        return None
    header, _, payload = uri.partition(",")
    if header.endswith(";base64"):
        return base64.b64decode(payload)
    return urllib.parse.unquote_to_bytes(payload)


class _Doc:
    """Buffer, accessor and image access for one glTF document."""

    def __init__(self, path: Path, doc: dict, binary: bytes | None):
        self.path, self.j = path, doc
        self.buffers = []
        for i, b in enumerate(doc.get("buffers", [])):
            uri = b.get("uri")
            if uri is None:
                if binary is None:
                    raise fail(path, f"buffer {i} refers to a GLB binary chunk that is missing")
                data = binary
            else:
                data = _data_uri(uri)
                if data is None:
                    ext = path.parent / urllib.parse.unquote(uri)
                    if not ext.exists():
                        raise fail(path, f"external buffer {ext.name} not found")
                    data = ext.read_bytes()
            if len(data) < b.get("byteLength", 0):
                raise fail(path, f"truncated buffer {i} ({len(data)} of {b['byteLength']} bytes)")
            self.buffers.append(data)
        self._images: dict[int, np.ndarray | None] = {}
        self._acc_cache: dict[tuple, np.ndarray] = {}
        self.notes: list[str] = []
        self.warnings: list[str] = []   # notes that change how the character looks (also in notes)

    def view_bytes(self, index: int) -> tuple[bytes, int, int | None]:
        bv = self.j["bufferViews"][index]
        return self.buffers[bv["buffer"]], bv.get("byteOffset", 0), bv.get("byteStride")

    def _strided(self, view: int, offset: int, dtype, ncomp: int, count: int) -> np.ndarray:
        buf, base, stride = self.view_bytes(view)
        itemsize = np.dtype(dtype).itemsize
        stride = stride or itemsize * ncomp
        start = base + offset
        end = start + stride * (count - 1) + itemsize * ncomp if count else start
        bv = self.j["bufferViews"][view]
        if end > len(buf) or end > base + bv["byteLength"]:
            raise fail(self.path, f"accessor reads past the end of bufferView {view} (truncated file?)")
        arr = np.ndarray((count, ncomp), dtype=dtype, buffer=buf, offset=start, strides=(stride, itemsize))
        return arr.copy()

    def accessor(self, index: int, normalize: bool = True) -> np.ndarray:
        """(count, ncomp) array; normalized integer data -> float32 in [0,1] / [-1,1].

        Cached (VRM primitives share their vertex accessors): do not modify the result in place."""
        key = (index, normalize)
        if key not in self._acc_cache:
            self._acc_cache[key] = self._accessor(index, normalize)
        return self._acc_cache[key]

    def _accessor(self, index: int, normalize: bool) -> np.ndarray:
        acc = self.j["accessors"][index]
        dtype = _DTYPES[acc["componentType"]]
        ncomp, count = _NCOMP[acc["type"]], acc["count"]
        if "bufferView" in acc:
            arr = self._strided(acc["bufferView"], acc.get("byteOffset", 0), dtype, ncomp, count)
        else:
            arr = np.zeros((count, ncomp), dtype)
        sp = acc.get("sparse")
        if sp:
            n = sp["count"]
            ii = sp["indices"]
            idx = self._strided(ii["bufferView"], ii.get("byteOffset", 0), _DTYPES[ii["componentType"]], 1, n)[:, 0]
            vv = sp["values"]
            vals = self._strided(vv["bufferView"], vv.get("byteOffset", 0), dtype, ncomp, n)
            if n and idx.max() >= count:
                raise fail(self.path, f"sparse accessor {index} index out of range")
            arr[idx.astype(np.int64)] = vals
        if normalize and acc.get("normalized") and dtype is not np.float32:
            info = np.iinfo(dtype)
            arr = np.maximum(arr.astype(np.float32) / info.max, -1.0).astype(np.float32)
        return arr

    def warn(self, msg: str) -> None:
        self.notes.append(msg)
        self.warnings.append(msg)

    def image(self, index: int) -> np.ndarray | None:
        """RGBA uint8 image, or None (noted) when it cannot be decoded."""
        if index in self._images:
            return self._images[index]
        from PIL import Image
        img = self.j["images"][index]
        name = img.get("name") or img.get("uri", f"image {index}")
        data = None
        try:
            if "bufferView" in img:
                buf, off, _ = self.view_bytes(img["bufferView"])
                data = buf[off: off + self.j["bufferViews"][img["bufferView"]]["byteLength"]]
            elif "uri" in img:
                data = _data_uri(img["uri"])
                if data is None:
                    p = self.path.parent / urllib.parse.unquote(img["uri"])
                    data = p.read_bytes() if p.exists() else None
                    if data is None:
                        self.warn(f"texture file {p.name} not found: base colour only")
            out = None
            if data is not None:
                im = Image.open(io.BytesIO(data))
                out = np.asarray(im.convert("RGBA"), np.uint8).copy()
        except (OSError, ValueError, SyntaxError) as e:
            self.warn(f"texture {name} not decodable ({e}): base colour only")
            out = None
        self._images[index] = out
        return out


# ----------------------------------------------------------------------------- transforms

def _quat_to_mat(q) -> np.ndarray:
    x, y, z, w = q
    n = np.sqrt(x * x + y * y + z * z + w * w) or 1.0
    x, y, z, w = x / n, y / n, z / n, w / n
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def _local_matrix(node: dict) -> np.ndarray:
    if "matrix" in node:
        return np.array(node["matrix"], np.float64).reshape(4, 4).T   # column-major in glTF
    m = np.eye(4)
    m[:3, :3] = _quat_to_mat(node.get("rotation", [0, 0, 0, 1])) * np.array(node.get("scale", [1, 1, 1]))[None]
    m[:3, 3] = node.get("translation", [0, 0, 0])
    return m


def _node_globals(path: Path, j: dict) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """World matrices and parents of all nodes, and the scene's nodes in traversal order."""
    nodes = j.get("nodes", [])
    parents = np.full(len(nodes), -1, np.int32)
    for i, n in enumerate(nodes):
        for c in n.get("children", []):
            parents[c] = i
    world = np.tile(np.eye(4), (len(nodes), 1, 1))
    scenes = j.get("scenes") or []
    if scenes:
        roots = scenes[j.get("scene", 0)].get("nodes", [])
    else:
        roots = [i for i in range(len(nodes)) if parents[i] < 0]
    order, stack, seen = [], [(r, np.eye(4)) for r in reversed(roots)], set()
    while stack:
        i, parent_m = stack.pop()
        if i in seen:
            raise fail(path, f"node graph has a cycle at node {i}")
        seen.add(i)
        world[i] = parent_m @ _local_matrix(nodes[i])
        order.append(i)
        stack.extend((c, world[i]) for c in reversed(nodes[i].get("children", [])))
    # nodes outside the scene still get a world matrix (skins may reference them)
    for i in range(len(nodes)):
        if i not in seen:
            chain, k = [], i
            while k >= 0:
                chain.append(k)
                k = parents[k]
            m = np.eye(4)
            for k in reversed(chain):
                m = m @ _local_matrix(nodes[k])
            world[i] = m
    return world, parents, order


# ----------------------------------------------------------------------------- materials

def _vrm0_mtoon(doc: _Doc, props: dict, mat: Material) -> Material:
    """Reduce a VRM 0.x MToon material to base colour + alpha behaviour."""
    fp, vp, tp = props.get("floatProperties", {}), props.get("vectorProperties", {}), props.get("textureProperties", {})
    kw, tags = props.get("keywordMap", {}), props.get("tagMap", {})
    if "_Color" in vp:
        mat.base_color_factor = np.array(vp["_Color"][:4], np.float32)
    if "_MainTex" in tp:
        mat.texture = _texture_image(doc, tp["_MainTex"])
    mode = _MTOON_BLEND.get(int(fp.get("_BlendMode", -1)))
    if mode is None:   # older exporters: keywords / render type tags
        rt = tags.get("RenderType", "Opaque")
        mode = ("BLEND" if kw.get("_ALPHABLEND_ON") or rt == "Transparent"
                else "MASK" if kw.get("_ALPHATEST_ON") or rt == "TransparentCutout" else "OPAQUE")
    mat.alpha_mode = mode
    mat.alpha_cutoff = float(fp.get("_Cutoff", mat.alpha_cutoff))
    if "_CullMode" in fp:
        mat.double_sided = int(fp["_CullMode"]) == 0
    return mat


def _texture_image(doc: _Doc, tex_index: int) -> np.ndarray | None:
    tex = doc.j.get("textures", [])[tex_index]
    src = tex.get("source")
    if src is None:   # KTX2 / webp via extensions: try the extension's source
        for ext in tex.get("extensions", {}).values():
            if isinstance(ext, dict) and "source" in ext:
                src = ext["source"]
                break
    return None if src is None else doc.image(src)


def _materials(doc: _Doc, vrm0: dict | None) -> tuple[list[Material], list[dict | None]]:
    """Materials plus, per material, the base-colour texture info (texCoord, transform)."""
    mats, texinfo = [], []
    mprops = {p.get("name"): p for p in (vrm0 or {}).get("materialProperties", [])}
    for i, m in enumerate(doc.j.get("materials", [])):
        pbr = m.get("pbrMetallicRoughness", {})
        mat = Material(name=m.get("name", f"material{i}"),
                       base_color_factor=np.array(pbr.get("baseColorFactor", [1, 1, 1, 1]), np.float32),
                       alpha_mode=m.get("alphaMode", "OPAQUE"),
                       alpha_cutoff=float(m.get("alphaCutoff", 0.5)),
                       double_sided=bool(m.get("doubleSided", False)))
        info = pbr.get("baseColorTexture")
        if info is not None:
            mat.texture = _texture_image(doc, info["index"])
        texinfo.append(info)
        props = mprops.get(mat.name)
        if props is None and vrm0 and i < len(vrm0.get("materialProperties", [])):
            props = vrm0["materialProperties"][i]
        if props is not None and "MToon" in str(props.get("shader", "")):
            mat = _vrm0_mtoon(doc, props, mat)
            if info is None and "_MainTex" in props.get("textureProperties", {}):
                texinfo[-1] = {"index": props["textureProperties"]["_MainTex"], "texCoord": 0}
        if mat.alpha_mode not in ("OPAQUE", "MASK", "BLEND"):
            doc.notes.append(f"material {mat.name}: unknown alphaMode {mat.alpha_mode!r}, using OPAQUE")
            mat.alpha_mode = "OPAQUE"
        mats.append(mat)
    return mats, texinfo


def _uv_transform(uv: np.ndarray, info: dict | None) -> np.ndarray:
    """KHR_texture_transform: uv' = T R S uv."""
    tt = (info or {}).get("extensions", {}).get("KHR_texture_transform")
    if not tt:
        return uv
    s = np.array(tt.get("scale", [1, 1]), np.float32)
    o = np.array(tt.get("offset", [0, 0]), np.float32)
    r = float(tt.get("rotation", 0.0))
    c, si = np.cos(r), np.sin(r)
    uv = uv * s
    uv = np.stack([c * uv[:, 0] + si * uv[:, 1], -si * uv[:, 0] + c * uv[:, 1]], 1)
    return (uv + o).astype(np.float32)


# ----------------------------------------------------------------------------- meshes

def _triangles(path: Path, idx: np.ndarray, mode: int) -> np.ndarray | None:
    if mode == 4:
        return idx[: len(idx) // 3 * 3].reshape(-1, 3)
    if mode == 5:   # strip: alternate winding
        if len(idx) < 3:
            return np.zeros((0, 3), np.int64)
        t = np.stack([idx[:-2], idx[1:-1], idx[2:]], 1)
        t[1::2] = t[1::2][:, [1, 0, 2]]
        return t
    if mode == 6:   # fan
        if len(idx) < 3:
            return np.zeros((0, 3), np.int64)
        return np.stack([np.full(len(idx) - 2, idx[0]), idx[1:-1], idx[2:]], 1)
    return None     # points / lines: not a surface


def _skin_influences(doc: _Doc, prim: dict) -> tuple[np.ndarray, np.ndarray] | None:
    """Top-4 (skin-local joint, weight) per vertex over all JOINTS_n / WEIGHTS_n sets."""
    attrs = prim["attributes"]
    js, ws = [], []
    k = 0
    while f"JOINTS_{k}" in attrs and f"WEIGHTS_{k}" in attrs:
        js.append(doc.accessor(attrs[f"JOINTS_{k}"], normalize=False).astype(np.int64))
        ws.append(doc.accessor(attrs[f"WEIGHTS_{k}"]).astype(np.float32))
        k += 1
    if not js:
        return None
    j, w = np.concatenate(js, 1), np.concatenate(ws, 1)
    if j.shape[1] > 4:
        top = np.argsort(-w, 1)[:, :4]
        j, w = np.take_along_axis(j, top, 1), np.take_along_axis(w, top, 1)
    return j, w


def _apply(m: np.ndarray, p: np.ndarray) -> np.ndarray:
    return p @ m[:3, :3].T + m[:3, 3]


def load_gltf(path, facing: str = "auto") -> Character:
    """Load a .vrm / .glb / .gltf file.

    ``facing``: 'auto' (VRM 0.x faces -Z, everything else +Z), '+z' or '-z' to
    say which way the file's character looks.
    """
    path = Path(path)
    doc_json, binary = _read_container(path)
    try:
        return _load(path, doc_json, binary, facing)
    except UserError:
        raise
    except (KeyError, IndexError, TypeError, ValueError, struct.error, ZeroDivisionError) as e:
        raise fail(path, f"corrupt glTF ({type(e).__name__}: {e})") from None


def _load(path: Path, j: dict, binary: bytes | None, facing: str) -> Character:
    doc = _Doc(path, j, binary)
    exts = j.get("extensions", {}) or {}
    vrm1, vrm0 = exts.get("VRMC_vrm"), exts.get("VRM")
    if vrm1 is not None:
        fmt, vrm_version = "vrm1", str(vrm1.get("specVersion", "1.0"))
    elif vrm0 is not None:
        fmt, vrm_version = "vrm0", str(vrm0.get("specVersion", "0.0"))
    else:
        fmt, vrm_version = ("glb" if binary is not None else "gltf"), None
    if facing == "auto":
        facing = "-z" if fmt == "vrm0" else "+z"
    if facing not in ("+z", "-z"):
        raise fail(path, f"facing must be 'auto', '+z' or '-z', got {facing!r}")
    to_canon = _ROT_Y180 if facing == "-z" else np.eye(4)

    nodes = j.get("nodes", [])
    world, parents, order = _node_globals(path, j)
    materials, texinfo = _materials(doc, vrm0 if fmt == "vrm0" else None)
    default_mat = None
    prims: list[Primitive] = []
    morphs = skipped_modes = 0
    any_skin = False
    for ni in order:
        node = nodes[ni]
        if "mesh" not in node:
            continue
        mesh = j["meshes"][node["mesh"]]
        skin = j["skins"][node["skin"]] if "skin" in node else None
        for pi, prim in enumerate(mesh["primitives"]):
            attrs = prim["attributes"]
            if "POSITION" not in attrs:
                continue
            pos = doc.accessor(attrs["POSITION"]).astype(np.float64)
            n = len(pos)
            idx = (doc.accessor(prim["indices"], normalize=False)[:, 0].astype(np.int64)
                   if "indices" in prim else np.arange(n, dtype=np.int64))
            tris = _triangles(path, idx, prim.get("mode", 4))
            if tris is None:
                skipped_modes += 1
                continue
            if len(tris) and (tris.max() >= n or tris.min() < 0):
                raise fail(path, f"mesh {mesh.get('name', node['mesh'])}: index out of range")
            morphs += len(prim.get("targets", []))
            # primitives often share one vertex buffer: keep only the vertices this one uses
            used = np.unique(tris)
            keep = used if len(used) < n else None
            if keep is not None:
                remap = np.full(n, -1, np.int64)
                remap[used] = np.arange(len(used))
                tris, pos, n = remap[tris], pos[used], len(used)

            def sub(a):
                return a if keep is None or a is None else a[keep]
            # joints index Skeleton joints = glTF nodes
            infl = _skin_influences(doc, prim) if skin is not None else None
            if infl is not None:
                any_skin = True
                sj, w = sub(infl[0]), sub(infl[1])
                skin_joints = np.asarray(skin["joints"], np.int64)
                if sj.max() >= len(skin_joints):
                    raise fail(path, f"mesh {mesh.get('name')}: JOINTS_0 refers past the skin's joints")
                ibm = (doc.accessor(skin["inverseBindMatrices"]).reshape(-1, 4, 4).transpose(0, 2, 1)
                       if "inverseBindMatrices" in skin else np.tile(np.eye(4), (len(skin_joints), 1, 1)))
                mats = world[skin_joints] @ ibm                       # (Js, 4, 4) skin matrices
                wsum = w.sum(1, keepdims=True)
                bad = wsum[:, 0] <= 1e-8
                w = np.where(bad[:, None], np.array([1, 0, 0, 0], np.float32), w / np.maximum(wsum, 1e-8))
                ph = np.concatenate([pos, np.ones((n, 1))], 1)
                out = np.zeros((n, 3))
                for k in range(sj.shape[1]):
                    mk = mats[sj[:, k]]                                # (N, 4, 4)
                    out += w[:, k:k + 1] * np.einsum("nij,nj->ni", mk, ph)[:, :3]
                pos = out
                joints = skin_joints[sj].astype(np.int32)
                joints[bad] = ni
                det = 1.0
            else:
                pos = _apply(world[ni], pos)
                joints = np.zeros((n, 4), np.int32)
                joints[:, 0] = ni            # rigidly attached to its node: follows it when posed
                w = np.zeros((n, 4), np.float32)
                w[:, 0] = 1.0
                det = np.linalg.det(world[ni][:3, :3])
            if det < 0:                      # mirrored transform flips the winding
                tris = tris[:, [0, 2, 1]]
            pos = _apply(to_canon, pos)
            mi = prim.get("material")
            if mi is None:
                if default_mat is None:
                    default_mat = len(materials)
                    materials.append(Material(name="default"))
                mi = default_mat
            info = texinfo[mi] if mi < len(texinfo) else None
            uvs = None
            if info is not None:
                tt = info.get("extensions", {}).get("KHR_texture_transform", {})
                key = f"TEXCOORD_{tt.get('texCoord', info.get('texCoord', 0))}"
                if key in attrs:
                    uvs = _uv_transform(sub(doc.accessor(attrs[key])).astype(np.float32), info)
            elif "TEXCOORD_0" in attrs:
                uvs = sub(doc.accessor(attrs["TEXCOORD_0"])).astype(np.float32)
            colors = None
            if "COLOR_0" in attrs:
                c = sub(doc.accessor(attrs["COLOR_0"])).astype(np.float32)
                if c.shape[1] == 3:
                    c = np.concatenate([c, np.ones((n, 1), np.float32)], 1)
                colors = np.clip(c, 0, 1)
            name = mesh.get("name", f"mesh{node['mesh']}")
            prims.append(Primitive(name=f"{name}.{pi}" if len(mesh["primitives"]) > 1 else name,
                                   positions=pos.astype(np.float32), faces=tris.astype(np.int32),
                                   material=int(mi), uvs=uvs, colors=colors,
                                   joints=joints, weights=w.astype(np.float32)))
    if not prims or sum(len(p.faces) for p in prims) == 0:
        raise fail(path, "empty mesh (no triangles in the scene)")

    # humanoid bones: VRM 1.0 dict, VRM 0.x list, our synthetic GLBs' scene extras
    humanoid: dict[str, int] = {}
    scene = (j.get("scenes") or [{}])[j.get("scene", 0)] if j.get("scenes") else {}
    extras = (scene.get("extras") or {}).get("anime3d", {}) if isinstance(scene.get("extras"), dict) else {}
    if vrm1 is not None:
        for bone, v in vrm1.get("humanoid", {}).get("humanBones", {}).items():
            if isinstance(v, dict) and "node" in v:
                humanoid[bone] = int(v["node"])
    elif vrm0 is not None:
        for hb in vrm0.get("humanoid", {}).get("humanBones", []):
            if "bone" in hb and hb.get("node", -1) >= 0:
                humanoid[hb["bone"]] = int(hb["node"])
    if isinstance(extras.get("humanoid"), dict):
        for bone, v in extras["humanoid"].items():
            humanoid.setdefault(bone, int(v["node"] if isinstance(v, dict) else v))
    for bone, ni in list(humanoid.items()):
        if not 0 <= ni < len(nodes):
            doc.notes.append(f"humanoid bone {bone} refers to missing node {ni}: ignored")
            del humanoid[bone]

    skeleton = None
    if nodes and (any_skin or humanoid):
        names = [nd.get("name") or f"node{i}" for i, nd in enumerate(nodes)]
        skeleton = Skeleton(names=names, parents=parents.astype(np.int32),
                            rest_global=(to_canon @ world).astype(np.float32), humanoid=humanoid)
    else:   # no bones at all: joints are meaningless
        for p in prims:
            p.joints = p.weights = None

    meta = {"format": fmt, "vrm_version": vrm_version, "facing_in_file": facing,
            "notes": doc.notes, "warnings": doc.warnings, "num_humanoid_bones": len(humanoid)}
    if "head_position" in extras:
        meta["head_position"] = _apply(to_canon, np.array([extras["head_position"]], np.float64))[0].tolist()
    if morphs:
        meta["notes"].append(f"{morphs} morph targets ignored (base shape)")
    if skipped_modes:
        meta["notes"].append(f"{skipped_modes} point/line primitives skipped")
    if not any(m.texture is not None for m in materials):
        meta["notes"].append("no textures: base colour only")
    if not humanoid:
        meta["notes"].append("no humanoid bones")
    info = (vrm0 or {}).get("meta") or (vrm1 or {}).get("meta") or {}
    for k in ("title", "name", "author", "authors", "licenseName", "licenseUrl"):
        if k in info:
            meta[k] = info[k]
    return Character(name=path.stem, source=str(path), primitives=prims, materials=materials,
                     skeleton=skeleton, meta=meta)

"""Write a skinned, textured character as GLB bytes with pygltflib.

Layout: nodes 0..J-1 are the humanoid joints (named with VRM bone names,
translation only, parented as in ``skeleton.PARENT``), node J is the skinned
mesh.  One mesh, one primitive per material (0: opaque, 1: alpha MASK), one
embedded PNG atlas.  ``scene.extras["anime3d"]`` carries the humanoid map,
head position, seed and parameters.  Output bytes depend only on the inputs.
"""
from __future__ import annotations

import io

import numpy as np
import pygltflib as g

from training.data.synth.geometry import Part, merge
from training.data.synth.skeleton import BONES, PARENT


def _normals(pos: np.ndarray, faces: np.ndarray) -> np.ndarray:
    fn = np.cross(pos[faces[:, 1]] - pos[faces[:, 0]], pos[faces[:, 2]] - pos[faces[:, 0]])
    n = np.zeros_like(pos)
    for k in range(3):
        np.add.at(n, faces[:, k], fn)
    ln = np.linalg.norm(n, axis=1, keepdims=True)
    n = np.where(ln > 1e-12, n / np.maximum(ln, 1e-12), [0.0, 1.0, 0.0])
    return n


class _Blob:
    def __init__(self):
        self.data = bytearray()
        self.views: list[g.BufferView] = []
        self.accessors: list[g.Accessor] = []

    def view(self, raw: bytes, target=None) -> int:
        while len(self.data) % 4:
            self.data.append(0)
        self.views.append(g.BufferView(buffer=0, byteOffset=len(self.data), byteLength=len(raw), target=target))
        self.data.extend(raw)
        return len(self.views) - 1

    def accessor(self, arr: np.ndarray, ctype: int, atype: str, target=None, minmax: bool = False) -> int:
        v = self.view(arr.tobytes(), target)
        acc = g.Accessor(bufferView=v, componentType=ctype, count=int(arr.shape[0]), type=atype)
        if minmax:
            acc.min = [float(x) for x in arr.min(0)]
            acc.max = [float(x) for x in arr.max(0)]
        self.accessors.append(acc)
        return len(self.accessors) - 1


def write_glb(parts: list[Part], atlas_png: bytes, joints_world: np.ndarray, extras: dict) -> bytes:
    blob = _Blob()
    prims = []
    for mat in (0, 1):
        group = [p for p in parts if p.material == mat]
        if not group:
            continue
        m = merge(group)
        pos = m.pos.astype(np.float32)
        faces = m.faces.astype(np.uint32 if len(pos) > 65535 else np.uint16)
        attrs = g.Attributes(
            POSITION=blob.accessor(pos, g.FLOAT, g.VEC3, g.ARRAY_BUFFER, minmax=True),
            NORMAL=blob.accessor(_normals(m.pos, m.faces).astype(np.float32), g.FLOAT, g.VEC3, g.ARRAY_BUFFER),
            TEXCOORD_0=blob.accessor(m.uv.astype(np.float32), g.FLOAT, g.VEC2, g.ARRAY_BUFFER),
            JOINTS_0=blob.accessor(m.joints.astype(np.uint16), g.UNSIGNED_SHORT, g.VEC4, g.ARRAY_BUFFER),
            WEIGHTS_0=blob.accessor(m.weights.astype(np.float32), g.FLOAT, g.VEC4, g.ARRAY_BUFFER),
        )
        idx = blob.accessor(faces.reshape(-1, 1), g.UNSIGNED_INT if faces.dtype == np.uint32 else g.UNSIGNED_SHORT,
                            g.SCALAR, g.ELEMENT_ARRAY_BUFFER)
        prims.append(g.Primitive(attributes=attrs, indices=idx, material=mat, mode=g.TRIANGLES))
    # inverse bind matrices: joints are pure translations (column-major MAT4)
    ibm = np.tile(np.eye(4, dtype=np.float32), (len(BONES), 1, 1))
    ibm[:, 3, :3] = -joints_world          # column-major: translation in elements 12..14
    ibm_acc = blob.accessor(ibm.reshape(len(BONES), 16), g.FLOAT, g.MAT4)
    img_view = blob.view(atlas_png)

    nodes = []
    for i, name in enumerate(BONES):
        par = PARENT[name]
        local = joints_world[i] - (joints_world[BONES.index(par)] if par else 0.0)
        children = [j for j, n in enumerate(BONES) if PARENT[n] == name]
        nodes.append(g.Node(name=name, translation=[float(x) for x in local], children=children or None))
    nodes.append(g.Node(name="body", mesh=0, skin=0))
    tex_info = g.TextureInfo(index=0)
    materials = [
        g.Material(name="opaque", pbrMetallicRoughness=g.PbrMetallicRoughness(baseColorTexture=tex_info, metallicFactor=0.0, roughnessFactor=1.0),
                   doubleSided=True, alphaMode=g.OPAQUE, extensions={"KHR_materials_unlit": {}}),
        g.Material(name="cutout", pbrMetallicRoughness=g.PbrMetallicRoughness(baseColorTexture=g.TextureInfo(index=0), metallicFactor=0.0, roughnessFactor=1.0),
                   doubleSided=True, alphaMode=g.MASK, alphaCutoff=0.5, extensions={"KHR_materials_unlit": {}}),
    ]
    gltf = g.GLTF2(
        asset=g.Asset(generator="anime3d training.data.synth", version="2.0"),
        extensionsUsed=["KHR_materials_unlit"],
        scene=0,
        scenes=[g.Scene(name="character", nodes=[0, len(BONES)], extras=extras)],
        nodes=nodes,
        meshes=[g.Mesh(name="body", primitives=prims)],
        skins=[g.Skin(name="humanoid", joints=list(range(len(BONES))), inverseBindMatrices=ibm_acc, skeleton=0)],
        materials=materials,
        textures=[g.Texture(sampler=0, source=0)],
        samplers=[g.Sampler(magFilter=g.LINEAR, minFilter=g.LINEAR_MIPMAP_LINEAR, wrapS=g.CLAMP_TO_EDGE, wrapT=g.CLAMP_TO_EDGE)],
        images=[g.Image(bufferView=img_view, mimeType="image/png", name="atlas")],
        accessors=blob.accessors,
        bufferViews=blob.views,
        buffers=[g.Buffer(byteLength=len(blob.data))],
    )
    gltf.set_binary_blob(bytes(blob.data))
    return b"".join(gltf.save_to_bytes())


def png_bytes(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()

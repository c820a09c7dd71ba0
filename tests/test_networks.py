"""Tiny-size CPU tests of the StyleGAN2 layers, triplane backbone, encoders, super-resolution, discriminators."""
import pytest
import torch
import torchvision

from training import networks_stylegan2 as nets
from training.dual_discriminator import DualDiscriminator, MaskDualDiscriminator
from training.encoders import MaskEncoder, PatchAggregationEncoder, ResNetEncoder, imagenet_weights_file
from training.errors import UserError
from training.superresolution import SuperresolutionHybrid

torch.set_num_threads(1)


def tiny_backbone(**kw):
    args = dict(z_dim=8, w_dim=16, plane_resolution=32, plane_channels=4, channel_base=256, channel_max=32,
                cond_resolution=32, enc_channels=16, enc_resolution=8, inject_image_resolutions=(8, 16, 32))
    args.update(kw)
    return nets.TriplaneBackbone(**args)


def tiny_d(cls=DualDiscriminator, **kw):
    return cls(c_dim=25, img_resolution=32, channel_base=128, channel_max=16, mapping_layers=2, **kw)


# --- FIR filters and bias_act ---------------------------------------------------------------

def test_fir_constant_stays_constant_and_up_down_align():
    f = nets.setup_filter([1, 3, 3, 1])
    c = torch.full([1, 2, 8, 8], 0.7)
    up = nets.upsample2d(c, f)
    assert up.shape == (1, 2, 16, 16)
    assert torch.allclose(up[..., 2:-2, 2:-2], torch.full_like(up[..., 2:-2, 2:-2], 0.7), atol=1e-6)
    down = nets.downsample2d(c, f)
    assert down.shape == (1, 2, 4, 4)
    assert torch.allclose(down[..., 1:-1, 1:-1], torch.full_like(down[..., 1:-1, 1:-1], 0.7), atol=1e-6)
    # a linear ramp sampled at pixel centres: upsampling gives the ramp at the fine centres,
    # downsampling that gives the coarse ramp back (no half-pixel shift either way)
    i = torch.arange(8.0)
    ramp = (i[:, None] + 2 * i[None, :]).expand(1, 1, 8, 8)
    j = (torch.arange(16.0) + 0.5) / 2 - 0.5
    fine = (j[:, None] + 2 * j[None, :]).expand(1, 1, 16, 16)
    assert torch.allclose(nets.upsample2d(ramp, f)[..., 2:-2, 2:-2], fine[..., 2:-2, 2:-2], atol=1e-5)
    assert torch.allclose(nets.downsample2d(fine, f)[..., 1:-1, 1:-1], ramp[..., 1:-1, 1:-1], atol=1e-5)
    # the conv_transpose fast path equals the zero-insertion definition
    x = torch.randn(2, 3, 5, 7)
    ref = nets.upfirdn2d(x, f, up=2, padding=[2, 1, 2, 1], gain=4)
    assert torch.allclose(nets.upsample2d(x, f), ref, atol=1e-6)
    assert nets.filter2d(x, f).shape == x.shape


def test_bias_act_gain_and_clamp():
    x = torch.tensor([[-1.0, 2.0, 300.0]])
    y = nets.bias_act(x, torch.tensor([0.0, 0.0, 0.0]), act="lrelu", clamp=256)
    assert torch.allclose(y, torch.tensor([[-0.2 * 2 ** 0.5, 2 * 2 ** 0.5, 256.0]]))
    assert torch.equal(nets.bias_act(x, torch.ones(3), dim=1), x + 1)


# --- modulated convolution -----------------------------------------------------------------

def _modconv_loop(x, weight, styles, up, demodulate, f):
    outs = []
    for b in range(x.shape[0]):  # the textbook definition: modulate the weights of each sample
        w = weight * styles[b][None, :, None, None]
        if demodulate:
            w = w / w.square().sum(dim=[1, 2, 3], keepdim=True).add(1e-8).sqrt()
        outs.append(nets.conv2d_resample(x[b:b + 1], w, f=f, up=up, padding=1))
    return torch.cat(outs)


@pytest.mark.parametrize("up", [1, 2])
@pytest.mark.parametrize("demodulate", [True, False])
def test_modulated_conv_matches_per_sample_loop(up, demodulate):
    torch.manual_seed(0)
    f = nets.setup_filter([1, 3, 3, 1])
    x, weight, styles = torch.randn(3, 5, 6, 6), torch.randn(7, 5, 3, 3), torch.randn(3, 5)
    ref = _modconv_loop(x, weight, styles, up, demodulate, f)
    for fused in (True, False):
        y = nets.modulated_conv2d(x, weight, styles, up=up, padding=1, resample_filter=f, demodulate=demodulate,
                                  fused_modconv=fused)
        assert y.shape == (3, 7, 6 * up, 6 * up)
        assert torch.allclose(y, ref, atol=1e-4, rtol=1e-4)
    if demodulate:  # demodulation makes each output channel's weights unit-norm: scale-invariant in styles
        y2 = nets.modulated_conv2d(x, weight, styles * 3, up=up, padding=1, resample_filter=f)
        assert torch.allclose(y2, ref, atol=1e-4, rtol=1e-4)


# --- mapping and triplane backbone ---------------------------------------------------------

def test_mapping_shapes_and_truncation():
    m = nets.MappingNetwork(z_dim=8, c_dim=25, w_dim=16, num_ws=5)
    z, c = torch.randn(4, 8), torch.randn(4, 25)
    ws = m(z, c, update_emas=True)
    assert ws.shape == (4, 5, 16) and torch.equal(ws[:, 0], ws[:, 4])
    assert m.w_avg.abs().sum() > 0
    assert torch.allclose(m(z, c, truncation_psi=0), m.w_avg.expand(4, 5, 16))


def test_backbone_shapes_and_conditioning():
    torch.manual_seed(0)
    G = tiny_backbone().eval()
    z = torch.randn(2, 8)
    cond = torch.rand(2, 3, 32, 32) * 2 - 1
    enc = torch.randn(2, 16, 8, 8)
    planes, ws = G(z, cond, enc, noise_mode="const")
    assert planes.shape == (2, 3, 4, 32, 32) and ws.shape == (2, G.num_ws, 16)
    assert torch.isfinite(planes).all() and planes.std() > 0
    # different condition image -> different planes; so does a different encoder feature
    p_cond, _ = G(z, cond.flip(3), enc, noise_mode="const")
    p_enc, _ = G(z, cond, enc * -1, noise_mode="const")
    assert (p_cond - planes).abs().mean() > 1e-3 * planes.abs().mean()
    assert (p_enc - planes).abs().mean() > 1e-3 * planes.abs().mean()
    # deterministic with const noise
    assert torch.equal(G(z, cond, enc, noise_mode="const")[0], planes)
    # unconditioned call works too (no hooks)
    assert G(z, noise_mode="const")[0].shape == planes.shape
    # multi-layer triplane (NOVA: 3 layers of 16 channels) just widens the channel axis
    G3 = tiny_backbone(plane_layers=3)
    assert G3(z, cond, enc)[0].shape == (2, 3, 12, 32, 32)


def test_cross_average_constant_along_axes():
    G = tiny_backbone()
    seen = []
    for name, mod in G.named_modules():
        if isinstance(mod, nets.CrossAverage):
            mod.register_forward_hook(lambda m, i, o: seen.append(o.detach()))
    G(torch.randn(2, 8), torch.randn(2, 3, 32, 32), torch.randn(2, 16, 8, 8))
    assert len(seen) == 3  # one per injection resolution
    for o in seen:
        n = o.shape[1] // 8
        rows, cols, rest = o[:, :n], o[:, n:2 * n], o[:, 2 * n:]
        assert torch.allclose(rows, rows[..., :1].expand_as(rows))  # row means: constant along W
        assert torch.allclose(cols, cols[..., :1, :].expand_as(cols))  # column means: constant along H
        assert (rows - rows[..., :1, :]).abs().max() > 0  # but vary along H
        assert (rest - rest[..., :1]).abs().max() > 0
    G_plain = tiny_backbone(cross_average=False)
    assert not any(isinstance(m, nets.CrossAverage) for m in G_plain.modules())


def test_bf16_autocast_runs_close_to_fp32():
    torch.manual_seed(0)
    G = tiny_backbone().eval()
    args = (torch.randn(2, 8), torch.randn(2, 3, 32, 32), torch.randn(2, 16, 8, 8))
    ref, _ = G(*args, noise_mode="const")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low, _ = G(*args, noise_mode="const")
    assert torch.isfinite(low).all()
    assert (low.float() - ref).abs().mean() < 0.1 * ref.abs().mean()


# --- encoders --------------------------------------------------------------------------------

def test_encoders_output_contract():
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    pat = PatchAggregationEncoder(out_channels=16, dims=(8, 16, 24, 32), depths=(1, 1, 1, 1), highres_channels=8)
    feat, hr = pat(x, return_highres=True)
    assert feat.shape == (2, 16, 2, 2) and hr.shape == (2, 8, 16, 16)
    assert torch.isfinite(feat).all()
    assert MaskEncoder(out_channels=16, base_channels=4, max_channels=16)(torch.rand(2, 1, 64, 64)).shape == (2, 16, 2, 2)
    r = ResNetEncoder(depth=18, out_channels=16)
    assert r.weights_source == "random init"
    assert r(x).shape == (2, 16, 2, 2)
    assert ResNetEncoder(depth=18, out_channels=16, in_channels=1)(x[:, :1]).shape == (2, 16, 2, 2)


def test_resnet_weights_imagenet_missing_and_paths(tmp_path, monkeypatch):
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    try:
        url, expected = imagenet_weights_file(18)
        with pytest.raises(UserError) as e:
            ResNetEncoder(depth=18, weights="imagenet")
        msg = str(e.value)
        assert str(expected) in msg and url in msg and "resnet18-f37072fd.pth" in msg
        # put a (random) torchvision state dict where torchvision caches it: it is used
        ref = torchvision.models.resnet18(weights=None)
        expected.parent.mkdir(parents=True)
        torch.save(ref.state_dict(), expected)
        enc = ResNetEncoder(depth=18, out_channels=8, weights="imagenet")
        assert torch.equal(enc.net.conv1.weight, ref.conv1.weight)
        assert enc.weights_source.startswith("imagenet")
    finally:
        torch.hub.set_dir(old)
    # a path: torchvision state dict, or a saved encoder
    p = tmp_path / "r18.pth"
    torch.save(ref.state_dict(), p)
    enc = ResNetEncoder(depth=18, out_channels=8, weights=str(p))
    assert torch.equal(enc.net.layer4[1].conv2.weight, ref.layer4[1].conv2.weight)
    q = tmp_path / "enc.pth"
    torch.save(enc.state_dict(), q)
    enc2 = ResNetEncoder(depth=18, out_channels=8, weights=q)
    assert torch.equal(enc2.proj.weight, enc.proj.weight)
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="bad.pth"):
        ResNetEncoder(depth=18, weights=bad)
    with pytest.raises(UserError, match="not a resnet50"):
        ResNetEncoder(depth=50, weights=p)


# --- super-resolution and discriminators ----------------------------------------------------

@pytest.mark.parametrize("n,inp,out", [(16, 16, 32), (8, 8, 32), (12, 8, 32), (16, 16, 16)])
def test_superresolution_shapes(n, inp, out):
    sr = SuperresolutionHybrid(channels=6, img_resolution=out, input_resolution=inp, w_dim=16, block_channels=(8, 4))
    y = sr(torch.rand(2, 3, n, n) * 2 - 1, torch.randn(2, 6, n, n), torch.randn(2, 5, 16))
    assert y.shape == (2, 3, out, out) and torch.isfinite(y).all()
    with pytest.raises(ValueError):
        SuperresolutionHybrid(channels=6, img_resolution=512, input_resolution=96)


def test_discriminators_shapes_and_camera_conditioning():
    torch.manual_seed(0)
    D = tiny_d()
    img = dict(image=torch.randn(4, 3, 32, 32), image_raw=torch.randn(4, 3, 16, 16))
    c = torch.randn(4, 25)
    out = D(img, c)
    assert out.shape == (4, 1) and out.dtype == torch.float32 and torch.isfinite(out).all()
    assert not torch.allclose(D(img, c + 1), out)  # camera-conditioned
    assert not torch.allclose(D(img, c, blur_sigma=2.0), out)  # blur changes the input
    MD = tiny_d(MaskDualDiscriminator, mask_resolution=16)
    img["image_mask"] = torch.rand(4, 1, 32, 32)
    parts = MD(img, c, return_parts=True)
    assert set(parts) == {"logits", "logits_image", "logits_mask"}
    assert torch.allclose(parts["logits"], parts["logits_image"] + parts["logits_mask"])
    img2 = dict(img, image_mask=1 - img["image_mask"])
    assert torch.equal(MD(img2, c, return_parts=True)["logits_image"], parts["logits_image"])
    assert not torch.allclose(MD(img2, c), parts["logits"])


def test_gradients_reach_every_parameter_group():
    torch.manual_seed(0)
    front_enc = ResNetEncoder(depth=18, out_channels=16)
    back_enc = PatchAggregationEncoder(out_channels=16, dims=(8, 16), depths=(1, 1), highres_channels=4)
    mask_enc = MaskEncoder(out_channels=16, base_channels=4, max_channels=16)
    G = tiny_backbone(c_dim=25)
    sr = SuperresolutionHybrid(channels=12, img_resolution=32, input_resolution=16, w_dim=16, block_channels=(8, 4))
    D = tiny_d(MaskDualDiscriminator, mask_resolution=16)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    enc = front_enc(x) + back_enc(x) + mask_enc((x[:, :1] > 0).float())
    c = torch.randn(2, 25)
    planes, ws = G(torch.randn(2, 8), x, enc, c=c)
    feat = planes.flatten(1, 2)[:, :, ::2, ::2]  # stand-in for the rendered feature image
    raw = feat[:, :3]
    image = sr(raw, feat, ws)
    logits = D(dict(image=image, image_raw=raw, image_mask=torch.sigmoid(feat[:, 3:4])), c)
    logits.sum().backward()
    for name, mod in [("front_enc", front_enc), ("back_enc", back_enc), ("mask_enc", mask_enc), ("G", G),
                      ("sr", sr), ("D", D)]:
        for pname, p in mod.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, f"{name}.{pname} got no gradient"


def test_r1_second_order_gradient_on_both_branches():
    torch.manual_seed(0)
    D = tiny_d(MaskDualDiscriminator, mask_resolution=16)
    img = {k: v.requires_grad_() for k, v in dict(image=torch.randn(4, 3, 32, 32), image_raw=torch.randn(4, 3, 16, 16),
                                                  image_mask=torch.rand(4, 1, 32, 32)).items()}
    parts = D(img, torch.randn(4, 25), blur_sigma=1.0, return_parts=True)
    g_img = torch.autograd.grad(parts["logits_image"].sum(), [img["image"], img["image_raw"]], create_graph=True)
    (g_mask,) = torch.autograd.grad(parts["logits_mask"].sum(), [img["image_mask"]], create_graph=True)
    r1 = sum(g.square().sum([1, 2, 3]).mean() for g in g_img) * 5.0 / 2 + g_mask.square().sum([1, 2, 3]).mean() * 1.0 / 2
    r1.backward()
    w_img = D.blocks[0].conv0.weight.grad
    w_mask = D.mask_blocks[0].conv0.weight.grad
    assert w_img is not None and w_img.abs().sum() > 0
    assert w_mask is not None and w_mask.abs().sum() > 0

@pytest.mark.parametrize("fold", [True, False])
@pytest.mark.parametrize("bf16", [False, True])
def test_twice_differentiable_conv_gives_autograds_r1(fold, bf16, monkeypatch):
    """The eager convs' own backward (conv_transpose2d for the input gradient) gives the same D outputs,
    first-order gradients and R1 parameter gradients as autograd's conv double backward, folded or not,
    in fp32 and under bf16 autocast."""
    torch.manual_seed(0)
    D = tiny_d()
    img0 = {"image": torch.randn(4, 3, 32, 32), "image_raw": torch.randn(4, 3, 16, 16)}
    c = torch.randn(4, 25)
    calls = []
    monkeypatch.setattr(nets._Conv2d, "forward", staticmethod(
        lambda ctx, *a, _f=nets._Conv2d.forward: calls.append(1) or _f(ctx, *a)))

    def run(twice):
        monkeypatch.setattr(nets, "TWICE_DIFFERENTIABLE_CONV", twice)
        D.zero_grad(set_to_none=True)
        img = {k: v.clone().requires_grad_(True) for k, v in img0.items()}
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = D(img, c)
        g = torch.autograd.grad(logits.float().sum(), [img["image"], img["image_raw"]], create_graph=True)
        sum(x.float().square().sum() for x in g).backward()
        return [logits.float(), *[x.float() for x in g]] + [torch.zeros_like(p) if p.grad is None else p.grad.float()
                                                             for p in D.parameters()]

    old = nets.set_fold(fold)
    try:
        ref = run(False)
        n = len(calls)
        out = run(True)
    finally:
        nets.set_fold(**old)
    assert n == 0 and len(calls) > 0           # the Function ran only when switched on
    tol = 3e-2 if bf16 else 1e-4
    for a, b in zip(ref, out):
        assert torch.allclose(a, b, atol=tol * max(1.0, float(a.detach().abs().max())), rtol=tol)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in D.parameters() if p.ndim == 4)



@pytest.mark.parametrize("up,down,k", [(2, 1, 3), (1, 2, 3), (1, 2, 1), (2, 1, 1)])
@pytest.mark.parametrize("groups", [1, 2])
def test_folded_fir_conv_equals_filter_then_conv(up, down, k, groups):
    torch.manual_seed(0)
    f = nets.setup_filter([1, 3, 3, 1])
    x, w = torch.randn(2, 4, 8, 8), torch.randn(6, 4 // groups, k, k)
    ref = nets.conv2d_resample(x, w, f=f, up=up, down=down, padding=k // 2, groups=groups, fold_filter=False)
    y = nets.conv2d_resample(x, w, f=f, up=up, down=down, padding=k // 2, groups=groups)
    assert y.shape == ref.shape == (2, 6, 8 * up // down, 8 * up // down)
    assert torch.allclose(y, ref, atol=1e-4)


def test_set_fold_switches_each_kind_and_keeps_the_numbers():
    """set_fold(False) (the torch.compile setting) runs a real discriminator and super-resolution through
    the unfolded paths (fewer FLOPs) with the same outputs and gradients as the folded default."""
    from torch.utils.flop_counter import FlopCounterMode
    from training.dual_discriminator import DualDiscriminator
    from training.superresolution import SuperresolutionHybrid
    torch.manual_seed(0)
    D = DualDiscriminator(c_dim=25, img_resolution=32, channel_base=256, channel_max=32)
    SR = SuperresolutionHybrid(channels=8, img_resolution=32, input_resolution=8, w_dim=16, block_channels=(16, 8))
    img = {"image": torch.randn(2, 3, 32, 32, requires_grad=True), "image_raw": torch.randn(2, 3, 16, 16)}
    c, feat, ws = torch.randn(2, 25), torch.randn(2, 8, 8, 8, requires_grad=True), torch.randn(2, 3, 16)

    def run():
        out = [D(img, c), SR(feat[:, :3], feat, ws, noise_mode="const")]
        grads = torch.autograd.grad(sum(o.square().sum() for o in out), [img["image"], feat])
        with FlopCounterMode(display=False) as fc:
            D(img, c), SR(feat[:, :3], feat, ws, noise_mode="const")
        return out, grads, fc.get_total_flops()

    assert nets.FOLD == {"up": True, "down": True, "down_1x1": True}
    out_f, grads_f, flops_f = run()
    old = nets.set_fold(False)
    try:
        assert old == {"up": True, "down": True, "down_1x1": True}
        assert nets.FOLD == {"up": False, "down": False, "down_1x1": False}
        out_u, grads_u, flops_u = run()
        nets.set_fold(down_1x1=True)
        assert nets.FOLD == {"up": False, "down": False, "down_1x1": True}
        with nets.fold_setting(True, down=False):
            assert nets.FOLD == {"up": True, "down": False, "down_1x1": True}
        assert nets.FOLD == {"up": False, "down": False, "down_1x1": True}
    finally:
        nets.set_fold(**old)
    assert nets.FOLD == old
    for a, b in zip(out_f + list(grads_f), out_u + list(grads_u)):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)
    assert flops_u < 0.6 * flops_f          # the point of unfolding: far fewer multiply-adds


@pytest.mark.parametrize("impl", ["taps", "batch", "depthwise"])
def test_fir_implementations_agree(impl, monkeypatch):
    torch.manual_seed(0)
    f1 = nets.setup_filter([1, 3, 3, 1])                  # separable taps
    f2 = nets.setup_filter([1, 3, 3, 1], separable=False)  # the same as a 2-D filter
    assert f1.ndim == 1 and f2.ndim == 2 and torch.allclose(torch.outer(f1, f1), f2)
    x = torch.randn(2, 3, 6, 7)
    g = nets.gaussian_filter(1.0)

    def run(f, gf):
        return [nets.upsample2d(x, f), nets.downsample2d(x, f), nets.filter2d(x, gf),
                nets.upfirdn2d(x, f, up=2, down=1, padding=[2, 1, 0, 3], gain=4), nets.upsample2d(x, f, up=4)]

    monkeypatch.setattr(nets, "FIR_IMPL", "depthwise")
    ref = run(f2, torch.outer(g, g))
    monkeypatch.setattr(nets, "FIR_IMPL", impl)
    for a, b in zip(run(f1, g), ref):
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-5)


def test_channels_last_gives_the_same_numbers():
    torch.manual_seed(0)
    G, Gcl = tiny_backbone(), tiny_backbone(channels_last=True)
    Gcl.load_state_dict(G.state_dict())
    args = (torch.randn(2, 8), torch.randn(2, 3, 32, 32), torch.randn(2, 16, 8, 8))
    assert torch.allclose(G(*args, noise_mode="const")[0], Gcl(*args, noise_mode="const")[0], atol=1e-4)
    D, Dcl = tiny_d(), tiny_d(channels_last=True)
    Dcl.load_state_dict(D.state_dict())
    img = dict(image=torch.randn(2, 3, 32, 32), image_raw=torch.randn(2, 3, 16, 16))
    c = torch.randn(2, 25)
    assert torch.allclose(D(img, c), Dcl(img, c), atol=1e-4)
    # the run-time switch reaches every block (G's synthesis blocks, D itself) and back
    assert nets.set_channels_last(G) == len(G.synthesis.blocks) and all(b.channels_last for b in G.synthesis.blocks)
    assert torch.allclose(G(*args, noise_mode="const")[0], Gcl(*args, noise_mode="const")[0], atol=1e-4)
    assert nets.set_channels_last(Dcl, False) == 1 and not Dcl.channels_last


def conv_backward_layouts(module, run):
    """{(grad layout, input layout)} of every convolution_backward in the compiled backward graphs of module
    (dynamo + AOT autograd, no inductor): what inductor would hand to cuDNN."""
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd

    def layout(t):
        if t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous():
            return "NHWC"
        return "NCHW" if t.is_contiguous() else "other"

    seen = []

    def bw(gm, example_inputs):
        for n in gm.graph.nodes:
            if n.op == "call_function" and "convolution_backward" in str(n.target):
                seen.append((layout(n.args[0].meta["val"]), layout(n.args[1].meta["val"])))
        return make_boxed_func(gm.forward)

    torch._dynamo.reset()
    run(torch.compile(module, backend=aot_autograd(fw_compiler=lambda gm, ex: make_boxed_func(gm.forward),
                                                   bw_compiler=bw)))
    torch._dynamo.reset()
    return seen


def test_channels_last_networks_get_channels_last_gradients():
    """Compiled channels-last backbone, super-resolution and D: every conv's gradient is NHWC like its input in
    the backward graph (CHANNELS_LAST_GRADS: the FIR filter after a transposed conv, the crops, the image
    injection, the cross-average and minibatch-std joins would otherwise give NCHW, which cuDNN copies to NHWC
    twice per conv).  Without the switch some are NCHW (the control)."""
    torch.manual_seed(0)
    G, sr, D = tiny_backbone(channels_last=True), None, tiny_d(channels_last=True)
    sr = SuperresolutionHybrid(channels=8, img_resolution=32, input_resolution=8, w_dim=16, block_channels=(16, 8),
                               channels_last=True)
    z, img, feat = torch.randn(2, 8), torch.randn(2, 3, 32, 32), torch.randn(2, 16, 8, 8)
    x, ws = torch.randn(2, 8, 8, 8, requires_grad=True), torch.randn(2, 3, 16)
    dimg = dict(image=torch.randn(2, 3, 32, 32), image_raw=torch.randn(2, 3, 16, 16))
    runs = {"backbone": (G, lambda f: f(z, img, feat)[0].square().mean().backward()),
            "superresolution": (sr, lambda f: f(x[:, :3], x, ws).square().mean().backward()),
            "D": (D, lambda f: f(dimg, torch.randn(2, 25)).sum().backward())}
    with nets.fold_setting(False):      # as compiled training (triplane.set_compiled_arithmetic)
        for name, (m, run) in runs.items():
            seen = conv_backward_layouts(m, run)
            assert seen and all(s == ("NHWC", "NHWC") for s in seen), (name, seen)
        try:
            nets.CHANNELS_LAST_GRADS = False
            seen = conv_backward_layouts(sr, runs["superresolution"][1])
        finally:
            nets.CHANNELS_LAST_GRADS = True
    assert ("NCHW", "NHWC") in seen


def test_resnet_three_stages_and_small_presets(tmp_path):
    """stages=3 stops at layer3 (stride 16, 256 channels for ResNet-18) and loads a full trunk without layer4."""
    enc = ResNetEncoder(depth=18, out_channels=8, stages=3)
    x = torch.rand(2, 3, 128, 128) * 2 - 1
    assert enc(x).shape == (2, 8, 8, 8)
    assert sum(p.numel() for p in enc.parameters()) < 3e6
    ref = torchvision.models.resnet18(weights=None)
    p = tmp_path / "r18.pth"
    torch.save(ref.state_dict(), p)
    enc = ResNetEncoder(depth=18, out_channels=8, stages=3, weights=str(p))
    assert torch.equal(enc.net.layer3[1].conv2.weight, ref.layer3[1].conv2.weight)
    with pytest.raises(ValueError, match="stages"):
        ResNetEncoder(depth=18, stages=2)
    from training.triplane import build_preset
    for name, n_max in (("panic_head_small", 5e6), ("nova_body_small", 6.5e6)):
        G = build_preset(name)
        assert sum(p.numel() for p in G.parameters()) < n_max     # bf16 G_ema + D stay small (a release export is at most 20 MB)
        assert G.encoder(torch.zeros(1, 3, 128, 128)).shape[-1] == 8
        if G.back_encoder is not None:
            assert G.back_encoder(torch.zeros(1, 3, 128, 128)).shape[-1] == 8
            assert G.mask_encoder(torch.zeros(1, 1, 128, 128)).shape[-1] == 8


def test_joined_fakes_and_reals_give_each_batchs_logits_and_gradients():
    """D main's one call on fakes + reals (join_pair) gives the logits and parameter gradients of two calls:
    each minibatch-std group keeps its members; a plain concatenation would mix fakes and reals in groups."""
    from training.dual_discriminator import join_pair, pair_group, split_pair
    torch.manual_seed(0)
    D = tiny_d(MaskDualDiscriminator, mask_resolution=16)
    n = 8
    assert pair_group(D, n) == 4
    assert pair_group(D, 2) is None and pair_group(D, 6) is None   # groups 2 -> 4 and 3 -> 4 when joined
    assert pair_group(tiny_d(mbstd_num_channels=0), 6) == 1
    assert pair_group(tiny_d(disc_c_noise=1.0), n) is None          # noise scale: std over the batch

    def batch(shift):
        return dict(image=torch.randn(n, 3, 32, 32) + shift, image_raw=torch.randn(n, 3, 16, 16) + shift,
                    image_mask=torch.rand(n, 1, 16, 16))
    fake, real, c = batch(0.0), batch(3.0), torch.randn(n, 25)

    def grads(loss):
        D.zero_grad(set_to_none=True)
        loss.backward()
        return {k: p.grad.clone() for k, p in D.named_parameters()}

    f, r = D(fake, c, return_parts=True), D(real, c, return_parts=True)
    g_two = grads(f["logits"].sum() - 2 * r["logits"].sum())
    joined = D({k: join_pair(fake[k], real[k], 4) for k in fake}, join_pair(c, c, 4), return_parts=True)
    for k in ("logits_image", "logits_mask"):
        jf, jr = split_pair(joined[k], 4)
        torch.testing.assert_close(jf, f[k], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(jr, r[k], rtol=1e-5, atol=1e-5)
    jf, jr = split_pair(joined["logits"], 4)
    g_one = grads(jf.sum() - 2 * jr.sum())
    for k in g_two:
        torch.testing.assert_close(g_one[k], g_two[k], rtol=1e-4, atol=1e-5)
    # a plain concatenation puts fakes and reals in the same groups: the minibatch std, so the logits, change
    cat = D({k: torch.cat([fake[k], real[k]]) for k in fake}, torch.cat([c, c]))
    assert (cat[:n] - f["logits"]).abs().max() > 1e-3

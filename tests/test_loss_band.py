import torch

from training.loss import alpha_loss, band_pixels


def test_band_scales_with_rendering_size_and_keeps_thin_parts_supervised():
    assert band_pixels(2, 128) == 2 and band_pixels(2, 512) == 8 and band_pixels(2, 16) == 0
    # a 2-px-wide limb at 16 px: the loss must still see it missing from the prediction
    gt = torch.zeros(1, 1, 16, 16)
    gt[..., 4:12, 7:9] = 1.0
    empty = torch.zeros_like(gt)
    assert alpha_loss(empty, gt, band_pixels(2, 16)) > 0.05
    assert alpha_loss(gt, gt, band_pixels(2, 16)) == 0


def test_dmain_joined_call_matches_two_calls():
    """ReconGANLoss's D main: fakes and reals in one joined D call (d_pair, the default) give the loss and D
    gradients of two calls; a batch whose minibatch-std group would change falls back to two calls."""
    from training.dual_discriminator import MaskDualDiscriminator
    from training.loss import LossConfig, ReconGANLoss
    torch.manual_seed(0)
    D = MaskDualDiscriminator(c_dim=25, img_resolution=32, channel_base=128, channel_max=16, mapping_layers=2,
                              mask_resolution=16)

    def run(d_pair, n):
        g = torch.Generator().manual_seed(n)
        batch = {"rgb": torch.rand(n, 3, 32, 32, generator=g) * 2 - 1, "rgb_cam": torch.randn(n, 25, generator=g),
                 "rgb_mask": torch.rand(n, 1, 32, 32, generator=g) > 0.5}
        fake = {"image": torch.randn(n, 3, 32, 32, generator=g), "image_raw": torch.randn(n, 3, 16, 16, generator=g),
                "image_mask": torch.rand(n, 1, 16, 16, generator=g)}
        loss_fn = ReconGANLoss(None, D, LossConfig(lpips_weight=0.0, d_pair=d_pair), box=1.0, use_mask_d=True)
        calls = []
        D.register_forward_hook(lambda m, args, out: calls.append(args[0]["image"].shape[0]))
        D.zero_grad(set_to_none=True)
        loss, stats = loss_fn._dmain(D, batch, fake, 0.0)
        loss.backward()
        D._forward_hooks.clear()
        return loss.detach(), stats, {k: p.grad.clone() for k, p in D.named_parameters()}, calls

    l2, s2, g2, calls2 = run(False, 8)
    l1, s1, g1, calls1 = run(True, 8)
    assert calls2 == [8, 8] and calls1 == [16]
    torch.testing.assert_close(l1, l2, rtol=1e-5, atol=1e-6)
    for k in ("D/real", "D/fake"):
        assert abs(s1[k] - s2[k]) < 1e-5
    for k in g2:
        torch.testing.assert_close(g1[k], g2[k], rtol=1e-4, atol=1e-6)
    assert run(True, 2)[3] == [2, 2]       # group 2 alone would become 4 joined: two calls


def test_blur_outside_d_gives_ds_blur_and_one_compiled_graph_while_it_fades():
    """The blur fade is applied by ReconGANLoss before D (DualDiscriminator.blur_inputs): the logits of D
    blurring its own inputs, and a compiled D keeps one graph while sigma changes every step (it compiled
    a new graph for each sigma when the blur was inside)."""
    from torch._dynamo.testing import CompileCounter
    from training.dual_discriminator import MaskDualDiscriminator
    from training.loss import LossConfig, ReconGANLoss
    torch.manual_seed(0)
    D = MaskDualDiscriminator(c_dim=25, img_resolution=32, channel_base=128, channel_max=16, mapping_layers=2,
                              mask_resolution=16)
    n = 4
    img = {"image": torch.randn(n, 3, 32, 32), "image_raw": torch.randn(n, 3, 8, 8),
           "image_mask": torch.rand(n, 1, 8, 8)}
    c = torch.randn(n, 25)
    for sigma in (0.0, 0.7, 3.0):
        inside = D(img, c, blur_sigma=sigma, return_parts=True)
        outside = D(D.blur_inputs(img, sigma), c, return_parts=True)
        for k in inside:
            torch.testing.assert_close(outside[k], inside[k], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(D(img, c, blur_sigma=3.0), D(img, c))

    torch._dynamo.reset()
    counter = CompileCounter()
    loss_fn = ReconGANLoss(None, D, LossConfig(lpips_weight=0.0), box=1.0, use_mask_d=True,
                           D_compiled=torch.compile(D, backend=counter, dynamic=False))
    batch = {"rgb": torch.rand(n, 3, 32, 32) * 2 - 1, "rgb_cam": c, "rgb_mask": torch.rand(n, 1, 32, 32) > 0.5}
    fake = {k: v.clone() for k, v in img.items()}
    for sigma in (10.0, 9.99, 9.98, 5.0):
        loss_fn.Dmain_call(loss_fn._dmain, batch, fake, sigma)
    assert counter.frame_count == 1
    loss_fn.Dmain_call(loss_fn._dmain, batch, fake, 0.0)      # the fade's end: the raw inputs' own sizes
    loss_fn.Dmain_call(loss_fn._dmain, batch, fake, 0.0)
    assert counter.frame_count == 2

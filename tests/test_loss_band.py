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

"""Checkpoint format: bit-exact round trip, variants, corrupt and foreign files, bf16 export."""
import pickle

import pytest
import torch

from training import cameras
from training.checkpoint import (FORMAT, build_module, export_bf16, load_checkpoint, load_generator,
                                 save_checkpoint)
from training.errors import UserError
from training.triplane import TriPlaneGenerator_v0, TriPlaneGenerator_v1, build_preset

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    G = build_preset("tiny", variant="TriPlaneGenerator_v1")
    with torch.no_grad():            # make the state distinguishable from a fresh init
        for p in G.parameters():
            p.add_(torch.randn_like(p) * 1e-3)
    opt = torch.optim.Adam(G.field.parameters(), lr=1e-3, betas=(0.0, 0.99))
    G.field(torch.randn(1, 6, 8, 16, 16), torch.rand(1, 10, 3) - 0.5, torch.randn(1, 10, 3))[1].sum().backward()
    opt.step()
    path = tmp_path_factory.mktemp("ckpt") / "network-snapshot-000012.pt"
    save_checkpoint(path, {"G_ema": G, "opt_G": opt, "augment": {"p": torch.tensor(0.25)}}, step=7, kimg=12.5,
                    training_config={"batch": 4, "lr": [0.0025]})
    return G, opt, path


def _cond():
    g = torch.Generator().manual_seed(5)
    return {"front": torch.rand(1, 3, 64, 64, generator=g) * 2 - 1, "back": torch.rand(1, 3, 64, 64, generator=g) * 2 - 1}


def test_round_trip_is_bit_exact(saved):
    G, opt, path = saved
    ckpt = load_checkpoint(path)
    assert ckpt["format"] == FORMAT and ckpt["step"] == 7 and ckpt["kimg"] == 12.5
    assert ckpt["training_config"] == {"batch": 4, "lr": [0.0025]}
    G2 = load_generator(path, expected="TriPlaneGenerator_v1")
    assert type(G2) is TriPlaneGenerator_v1 and G2.config == G.config
    sd1, sd2 = G.state_dict(), G2.state_dict()
    assert sd1.keys() == sd2.keys() and all(torch.equal(sd1[k], sd2[k]) for k in sd1)
    cam = cameras.as_tensor(cameras.view_set("rgb", "head", char_id="ck")[:1])
    G.eval()
    with torch.no_grad():
        a, b = G(_cond(), cam), G2(_cond(), cam)
    for k in ("image", "image_raw", "image_depth", "image_alpha"):
        assert torch.equal(a[k], b[k]), k
    # optimizer state restores into a fresh optimizer
    opt2 = torch.optim.Adam(G2.field.parameters(), lr=1e-3)
    opt2.load_state_dict(ckpt["modules"]["opt_G"]["state_dict"])
    s1, s2 = opt.state_dict()["state"], opt2.state_dict()["state"]
    assert all(torch.equal(s1[i]["exp_avg"], s2[i]["exp_avg"]) for i in s1)
    assert torch.equal(ckpt["modules"]["augment"]["state_dict"]["p"], torch.tensor(0.25))
    # expected as a class or a full path works too
    load_generator(path, expected=TriPlaneGenerator_v1)
    load_generator(path, expected="training.triplane.TriPlaneGenerator_v1")


def test_wrong_variant_and_missing_key(saved):
    _, _, path = saved
    with pytest.raises(UserError, match="TriPlaneGenerator_v1, not the expected TriPlaneGenerator_v0"):
        load_generator(path, expected=TriPlaneGenerator_v0)
    with pytest.raises(UserError, match="no 'G' in checkpoint"):
        load_generator(path, key="G")


def test_bad_files(saved, tmp_path):
    _, _, path = saved
    with pytest.raises(UserError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    data = path.read_bytes()
    trunc = tmp_path / "truncated.pt"
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="corrupt or truncated"):
        load_checkpoint(trunc)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(UserError, match="unrecognised file format"):
        load_checkpoint(junk)
    plain = tmp_path / "tensor.pt"
    torch.save({"weights": torch.zeros(2)}, plain)
    with pytest.raises(UserError, match="not an anime3d-checkpoint"):
        load_checkpoint(plain)
    legacy = tmp_path / "legacy.pkl"
    legacy.write_bytes(pickle.dumps({"G_ema": torch.nn.Linear(2, 2)}))
    with pytest.raises(UserError, match="plain Python pickle"):
        load_checkpoint(legacy)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(UserError, match="empty or truncated"):
        load_checkpoint(empty)
    newer = tmp_path / "v2.pt"
    ck = torch.load(path, weights_only=True)
    ck["version"] = 2
    torch.save(ck, newer)
    with pytest.raises(UserError, match="version 2"):
        load_checkpoint(newer)
    evil = tmp_path / "evil.pt"
    ck = torch.load(path, weights_only=True)
    ck["modules"]["G_ema"]["class"] = "os.system"
    torch.save(ck, evil)
    with pytest.raises(UserError, match="refusing"):
        load_generator(evil)


def test_save_is_atomic_and_leaves_no_temp(saved, tmp_path):
    G, _, _ = saved
    save_checkpoint(tmp_path / "a.pt", {"G_ema": G}, step=1, kimg=0.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pt"]


def test_bf16_export_upcasts_on_load(saved, tmp_path):
    G, _, path = saved
    out = export_bf16(path, tmp_path / "small.pt")
    assert out.stat().st_size < 0.6 * path.stat().st_size
    ckpt = load_checkpoint(out)
    assert "opt_G" not in ckpt["modules"]
    G2 = build_module(ckpt["modules"]["G_ema"])
    for k, v in G.state_dict().items():
        w = G2.state_dict()[k]
        assert w.dtype == v.dtype
        if v.is_floating_point():
            assert torch.equal(w, v.to(torch.bfloat16).float()), k


def test_superresolution_noise_mode_and_checkpoints_from_before_it():
    """superresolution_noise_mode: "none" by default (EG3D's setting; the super-resolution then has no noise
    parameters), "random" gives StyleGAN2's noise inputs; a generator config saved before the key existed
    (trained with noise) rebuilds with noise and loads its weights strictly."""
    def sr_noise_keys(G):
        return [k for k in G.state_dict() if k.startswith("superresolution.") and "noise" in k]

    G = build_preset("tiny", variant="TriPlaneGenerator")
    assert G.rendering_kwargs["superresolution_noise_mode"] == "none" and not sr_noise_keys(G)
    assert any("noise" in k for k in G.backbone.state_dict())      # the backbone keeps its noise inputs
    Gr = build_preset("tiny", variant="TriPlaneGenerator", rendering_kwargs={"superresolution_noise_mode": "random"})
    assert sr_noise_keys(Gr)
    with pytest.raises(ValueError, match="superresolution_noise_mode"):
        build_preset("tiny", variant="TriPlaneGenerator", rendering_kwargs={"superresolution_noise_mode": "const"})
    old = {**Gr.config, "rendering_kwargs": {k: v for k, v in Gr.config["rendering_kwargs"].items()
                                             if k != "superresolution_noise_mode"}}
    entry = {"class": "training.triplane.TriPlaneGenerator", "config": old, "state_dict": Gr.state_dict()}
    rebuilt = build_module(entry)
    assert rebuilt.rendering_kwargs["superresolution_noise_mode"] == "random"
    assert sr_noise_keys(rebuilt) == sr_noise_keys(Gr)
    # the generator renders with the mode in training and in eval
    cam = cameras.as_tensor(cameras.view_set("rgb", "head", char_id="ck")[:1])
    for g in (G, Gr):
        for train in (True, False):
            with torch.no_grad():
                assert torch.isfinite(g.train(train)({"front": _cond()["front"]}, cam)["image"]).all()


@pytest.mark.parametrize("variant", ["TriPlaneGenerator", "TriPlaneGenerator_v0", "TriPlaneGenerator_v1"])
def test_rebuilt_module_equals_the_saved_one_buffers_included(variant, tmp_path):
    """build_module skips the random initialisation of the weights it then loads: every parameter and
    buffer, the non-persistent ones (resampling filters, the encoders' normalisation) included, must be what a
    normally built module holds; a buffer drawn at random and not saved would differ here."""
    torch.manual_seed(1)
    G = build_preset("tiny", variant=variant)
    save_checkpoint(tmp_path / "s.pt", {"G_ema": G}, step=1, kimg=0.0)
    entry = load_checkpoint(tmp_path / "s.pt")["modules"]["G_ema"]
    state = torch.get_rng_state()
    rebuilt = build_module(entry)
    got, want = dict(rebuilt.named_buffers()), dict(G.named_buffers())
    assert got.keys() == want.keys() and len(want) > len(G.state_dict(keep_vars=False)) - len(dict(G.named_parameters()))
    assert all(torch.equal(got[k], want[k]) for k in want), [k for k in want if not torch.equal(got[k], want[k])]
    sd, ref_sd = rebuilt.state_dict(), G.state_dict()
    assert all(torch.equal(sd[k], ref_sd[k]) for k in ref_sd)
    # the in-place draws were skipped: the rebuild consumed less of the global generator than a fresh build
    skipped = torch.get_rng_state()
    torch.set_rng_state(state)
    build_preset("tiny", variant=variant)
    assert not torch.equal(skipped, torch.get_rng_state())

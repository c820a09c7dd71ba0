"""G_ema's BatchNorm statistics re-estimated on training inputs (training.run.batchnorm), in the trainer, and
the trainer's --minutes time limit."""
import copy

import torch

from tests.test_training import metrics, snapshot, tiny_config, toy_data  # noqa: F401 (toy_data: a fixture)
from training import checkpoint, triplane
from training.run import batchnorm
from training.training_loop import bn_inputs, build_dataset, train


def _tiny_g(seed=0):
    torch.manual_seed(seed)
    return triplane.build_preset("tiny", framing="head")


def _cond(seed, n=4):
    g = torch.Generator().manual_seed(seed)
    return {"front": torch.rand(n, 3, 64, 64, generator=g) * 2 - 1, "back": torch.rand(n, 3, 64, 64, generator=g) * 2 - 1}


def _stats(G):
    return [torch.cat([m.running_mean, m.running_var]) for m in batchnorm.batchnorms(G)]


def test_recalibrated_statistics_are_the_batch_statistics():
    """After re-estimating on one batch, the eval-mode generator normalises that batch as training does (its
    own batch statistics), where the running statistics of other weights were far off; weights and
    every module's mode are unchanged."""
    G = _tiny_g()
    assert batchnorm.batchnorms(G), "the tiny preset's ResNet has BatchNorm"
    cond = _cond(1, n=16)
    G.train()
    with torch.no_grad():
        for s in range(3):                     # running statistics gathered by other weights
            for p in G.encoder.parameters():
                p.add_(torch.randn_like(p) * 0.3)
            G.synthesize(_cond(10 + s))
        G.encoder.eval()                       # a mixed mode, as --freeze-bn leaves G
        G.backbone.eval()
        want = {m: m.training for m in G.modules()}
        weights = copy.deepcopy(G.state_dict())
        enc = lambda: G.encoder(G._prep(cond["front"]))       # noqa: E731
        G.encoder.train()
        batch_stats = enc()
        G.encoder.eval()
        before = (enc() - batch_stats).abs().max()
        assert batchnorm.recalibrate(G, [cond])
        after = (enc() - batch_stats).abs().max()
    assert {m: m.training for m in G.modules()} == want
    for k, v in G.state_dict().items():
        if "running" not in k and "num_batches" not in k:
            assert torch.equal(v, weights[k]), k
    # the running variance is the unbiased estimate (training divides by n, and the last stage has 2x2 pixels):
    # a small difference remains
    assert after < 0.03 * batch_stats.abs().max() and before > 100 * after, (before, after)


def test_recalibration_averages_batches_and_ignores_generators_without_batchnorm():
    G = _tiny_g()
    G.eval()
    a, b = _cond(2), _cond(3)
    batchnorm.recalibrate(G, [a, b])
    two = _stats(G)
    batchnorm.recalibrate(G, [a])
    one_a = _stats(G)
    batchnorm.recalibrate(G, [b])
    one_b = _stats(G)
    for t, x, y in zip(two, one_a, one_b):    # momentum None: the plain average of the batches' statistics
        assert torch.allclose(t, (x + y) / 2, atol=1e-5)
    assert not batchnorm.recalibrate(torch.nn.Linear(2, 2), [a])
    assert not batchnorm.recalibrate(G, [])


def test_trainer_snapshots_recalibrated_g_ema(toy_data, tmp_path):  # noqa: F811
    """With trainable BatchNorm the snapshot's G_ema carries statistics re-estimated for its own weights (a
    second re-estimation on the same inputs changes nothing); with --bn-recalibrate 0 they are G's copies."""
    runs = {}
    for n in (0, 4):
        cfg = tiny_config(toy_data, tmp_path, f"bn{n}", **{"freeze-bn": False, "bn-recalibrate": n,
                                                           "kimg": 0.006, "glr": 0.01, "beta1": 0.9})
        train(cfg)
        runs[n] = cfg
    cfg = runs[4]
    path = sorted((tmp_path / "bn4").glob("*/network-snapshot-*.pt"))[-1]
    G_ema, G = checkpoint.load_generator(path), checkpoint.load_generator(path, key="G")
    saved = _stats(G_ema)
    assert any(not torch.allclose(s, g) for s, g in zip(saved, _stats(G)))
    conds = bn_inputs(cfg, build_dataset(cfg), cfg.batch, torch.device("cpu"))
    assert sum(c["front"].shape[0] for c in conds) == 4
    batchnorm.recalibrate(G_ema, conds)
    for s, r in zip(saved, _stats(G_ema)):
        assert torch.allclose(s, r, atol=1e-4)
    p0 = sorted((tmp_path / "bn0").glob("*/network-snapshot-*.pt"))[-1]
    for s, g in zip(_stats(checkpoint.load_generator(p0)), _stats(checkpoint.load_generator(p0, key="G"))):
        assert torch.equal(s, g)


def test_minutes_stops_with_a_snapshot(toy_data, tmp_path, capsys):  # noqa: F811
    run = train(tiny_config(toy_data, tmp_path, "timed", kimg=1000, minutes=0.0001))
    assert len(metrics(run)) == 1 and snapshot(run)["step"] == 1
    assert "stopped by time limit (--minutes) at step 1" in capsys.readouterr().out

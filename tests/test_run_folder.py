"""The run folder: snapshot names that never collide, how many are kept and what they hold, and the clean-up
when a killed run resumes (orphaned temporary files, ticks logged after the resumed snapshot)."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.test_training import metrics, tiny_args, tiny_config, toy_data  # noqa: F401 (fixture)
from training import checkpoint
from training.run import snapshots
from training.eval.generate import inferquery_of, resolve_inferquery
from training.run.snapshots import latest_snapshot
from training.training_loop import train

REPO = Path(__file__).resolve().parent.parent


def names(run):
    return sorted(p.name for p in Path(run).glob("network-snapshot-*.pt"))


def test_snapshots_before_one_kimg_get_their_own_names_and_the_newest_are_kept(toy_data, tmp_path):  # noqa: F811
    # 5 steps of 2 images, a snapshot each tick (each step), keep 3
    run = train(tiny_config(toy_data, tmp_path, "names", kimg=0.010, **{"snap-keep": 3}))
    assert names(run) == ["network-snapshot-000000.006.pt", "network-snapshot-000000.008.pt",
                          "network-snapshot-000000.010.pt"]
    assert checkpoint.load_checkpoint(latest_snapshot(run))["step"] == 5
    steps = [checkpoint.load_checkpoint(run / n)["step"] for n in names(run)]
    assert steps == [3, 4, 5]                        # names sort like time: ls | tail -1 is the newest
    # --inferquery: the fractional kimg as written, or the whole kimg when that names one snapshot
    assert resolve_inferquery("names-00000-000000.008", tmp_path) == run / "network-snapshot-000000.008.pt"
    assert inferquery_of(run / "network-snapshot-000000.008.pt") == "names-00000-000000.008"
    with pytest.raises(Exception, match="several snapshots in kimg 0"):
        resolve_inferquery("names-00000-0", tmp_path)
    # 0 keeps them all; older runs' integer names are still found and ordered
    run2 = train(tiny_config(toy_data, tmp_path, "all", kimg=0.006, **{"snap-keep": 0}))
    assert len(names(run2)) == 3
    (run2 / "network-snapshot-000000.pt").write_bytes((run2 / names(run2)[0]).read_bytes())
    assert snapshots.snapshot_key("network-snapshot-000000.pt") == 0.0
    assert latest_snapshot(run2).name == "network-snapshot-000000.006.pt"
    assert resolve_inferquery("all-00000-000000", tmp_path) == run2 / "network-snapshot-000000.pt"


def test_the_best_snapshot_on_a_held_out_metric_is_kept_and_released(tmp_path):
    """--snap-keep-best: the snapshot whose tick scored highest on the metric survives the pruning of the
    older ones until a better one comes, and is the one a release exports (release_choice); ticks without
    the metric, other metrics and a cut line are passed over."""
    run = tmp_path / "run"
    run.mkdir()

    def tick(kimg, side):
        rec = {"step": int(kimg * 100), "kimg": kimg, "val/psnr_front": 30.0}
        if side is not None:
            rec["val/psnr_side"] = side
        with open(run / "metrics.jsonl", "a") as f:
            f.write(json.dumps(rec) + "\n")
        (run / snapshots.snapshot_name(round(kimg * 1000))).write_bytes(b"")

    for kimg, side in ((2.0, 20.0), (4.0, 23.0), (6.0, 22.0), (8.0, 21.5), (10.0, None)):
        tick(kimg, side)
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 1100, "kimg": 11.0, "val/psnr_si\n')          # a line cut by a kill
    name = snapshots.snapshot_name
    assert snapshots.best_snapshot(run, "val/psnr_side").name == name(4000)
    assert snapshots.best_snapshot(run, "val/psnr_back") is None
    assert snapshots.release_choice(run).name == name(10000)           # no config: the newest
    (run / "config.json").write_text(json.dumps({"snap_keep_best": "val/psnr_side"}))
    assert snapshots.release_choice(run).name == name(4000)
    snapshots.prune(run, 2, "val/psnr_side")
    assert names(run) == [name(4000), name(8000), name(10000)]
    tick(12.0, 24.0)                                                      # a better one: the old best goes
    snapshots.prune(run, 2, "val/psnr_side")
    assert names(run) == [name(10000), name(12000)]
    assert snapshots.release_choice(run).name == name(12000)
    snapshots.prune(run, 1)
    assert names(run) == [name(12000)]


def test_untrained_discriminator_is_a_marker_and_resumes_exactly(toy_data, tmp_path):  # noqa: F811
    """GAN off: D never steps, so the snapshot stores no D weights and no D moments; a resumed run rebuilds D
    from the seed and ends exactly where the uninterrupted one does."""
    det = {"no-ray-perturb": True, "no-random-views": True, "gan-weight": 0, "tv-interval": 2, "tv-points": 64,
           "discriminator": "DualDiscriminator", "d-kwargs": "{}"}     # D at its default (large) width
    straight = train(tiny_config(toy_data, tmp_path, "straight", kimg=0.008, **det))
    ck = checkpoint.load_checkpoint(latest_snapshot(straight))
    assert ck["modules"]["D"]["untrained"] and ck["modules"]["D"]["state_dict"] == {}
    assert ck["modules"]["opt_D"]["state_dict"]["state"] == {}
    size = latest_snapshot(straight).stat().st_size
    g_bytes = sum(t.numel() * t.element_size() for t in ck["modules"]["G"]["state_dict"].values())
    assert size < 4.3 * g_bytes                      # G, G_ema, two Adam moments: D's 91 MB are not there
    half = train(tiny_config(toy_data, tmp_path, "resumed", kimg=0.004, **det))
    resumed = train(tiny_config(toy_data, tmp_path, "resumed", kimg=0.008, **det))
    assert resumed == half
    a = checkpoint.load_checkpoint(latest_snapshot(resumed))["modules"]
    b = ck["modules"]
    for net in ("G", "G_ema"):
        for k, v in a[net]["state_dict"].items():
            assert torch.allclose(v.float(), b[net]["state_dict"][k].float(), atol=1e-6), (net, k)
    with pytest.raises(Exception, match="stored untrained"):
        checkpoint.build_module(a["D"], "snapshot")


def _cli(args, **kw):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "_train.eg3dc.train", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def test_kill_during_a_snapshot_then_resume(toy_data, tmp_path):  # noqa: F811
    """SIGKILL mid-write leaves a temporary file; ticks may have been logged after the last snapshot.  The
    resumed run removes the file (readers never took it for a snapshot) and drops the lost ticks, so the
    log's steps only go forward."""
    args = tiny_args(toy_data, tmp_path, "k", kimg=0.012, **{"no-progress": True, "snap-ticks": 2})
    p = _cli(args)
    run = tmp_path / "k" / "00000"
    deadline = time.time() + 180
    while not (run / "metrics.jsonl").exists() or len(metrics(run)) < 4:
        assert p.poll() is None and time.time() < deadline, p.stdout.read()
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    snap = latest_snapshot(run)
    at = checkpoint.load_checkpoint(snap)["step"]
    orphan = run / f".{snap.stem}.kill1234.tmp.pt"           # what atomic_path leaves when killed mid-write
    orphan.write_bytes(b"PK\x03\x04" + b"\0" * 1000)
    with open(run / "metrics.jsonl", "a") as f:              # a tick after the snapshot and a torn line
        f.write(json.dumps({"tick": 99, "step": at + 1, "kimg": 1.0}) + "\n{\"tick\": 100, \"st")
    assert latest_snapshot(run) == snap                      # the orphan is not taken for a snapshot
    assert resolve_inferquery(f"k-00000-{snap.name[17:-3]}", tmp_path) == snap
    r = _cli(args)
    out, _ = r.communicate(timeout=240)
    assert r.returncode == 0, out
    assert f"resuming {snap.name}, step {at}" in out and orphan.name in out
    assert not orphan.exists() and not list(run.glob(".*tmp*"))
    steps = [m["step"] for m in metrics(run)]
    assert steps == sorted(steps) and len(steps) == len(set(steps)) and steps[-1] == 6, steps

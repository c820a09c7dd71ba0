"""_scripts.bench.models on the CPU at toy sizes: it runs the trainer's own step (the same phases, losses and
gradients as training_loop.train for the same flags, seed and batch), its synthetic batches have the
dataset's keys and shapes, the EG3D-equivalent recipe does EG3D's per-step work, the sweeps build the
configurations they name, and failures (out of memory, a compile error) are recorded per configuration."""
import json

import pytest
import torch

from _scripts.bench import models as bench
from tests.test_training import toy_data, tiny_args   # noqa: F401 (toy_data: a fixture)
from training import loss as L
from training.run import distributed, train_step
from training import training_loop
from training.dataset import collate

FAST = ["--threads", "1", "--warmup", "0", "--steps", "1"]


class Recorder:
    """Each phase's stats (ReconGANLoss.accumulate_gradients) and the gradients its optimizer step sees
    (training.run.train_step.guarded_step), in call order, whoever runs the step."""

    def __init__(self, monkeypatch):
        self.calls = []
        accumulate, guarded = L.ReconGANLoss.accumulate_gradients, distributed.guarded_step

        def recording_accumulate(loss, phase, *args, **kwargs):
            stats = accumulate(loss, phase, *args, **kwargs)
            self.calls.append({"phase": phase, "stats": {k: float(v) for k, v in (stats or {}).items()}})
            return stats

        def recording_step(opt, params, d):
            self.calls[-1]["grads"] = [None if p.grad is None else p.grad.detach().clone() for p in params]
            return guarded(opt, params, d)

        monkeypatch.setattr(L.ReconGANLoss, "accumulate_gradients", recording_accumulate)
        monkeypatch.setattr(train_step, "guarded_step", recording_step)

    def take(self) -> list[dict]:
        out, self.calls = self.calls, []
        return out


def step_args(root, runs, **over):
    """A tiny run (recipe 'tiny': the EG3D-equivalent GAN, D main on fresh fakes) whose first step has every
    phase and term: reconstruction of two ortho views, ray patches, the GAN with the mask discriminator,
    density TV and R1 (mask branch included)."""
    a = {"config": "tiny", "generator": "TriPlaneGenerator_v1", "discriminator": "MaskDualDiscriminator",
         "view-weights": "front=1,back=1", "ray-views": 2, "ray-patches": 2, "ray-patch-size": 8,
         "ray-scales": "1,2", "ray-depth-weight": 1.0, "tv-points": 64, "r1-interval": 1, "tv-interval": 1,
         "no-progress": True}
    a.update(over)
    return tiny_args(root, runs, "bench_eq", **a)


def test_benchmark_step_is_the_trainers_step(toy_data, tmp_path, monkeypatch):   # noqa: F811
    """The same flags, seed and (real) batch: the benchmark's first step runs the trainer's phases in the
    trainer's order with the same losses and the same gradients, to the bit on a CPU.  With synthetic
    batches the losses differ, so the comparison would notice a step that is not the trainer's."""
    torch.set_num_threads(1)
    from _train.eg3dc.train import config_from_args
    rec = Recorder(monkeypatch)
    training_loop.train(config_from_args(step_args(toy_data, tmp_path)))            # one step (kimg = batch / 1000)
    trainer = rec.take()
    assert [c["phase"] for c in trainer] == ["Gmain", "Greg", "Dmain", "Dreg"]
    assert {"ray/l1", "ray/depth", "recon/back/alpha", "G/gan", "D/r1_mask", "G/tv"} <= \
        {k for c in trainer for k in c["stats"]}
    (r,) = bench.main(step_args(toy_data, tmp_path) + ["--data", "real", "--train-only"] + FAST)
    assert "error" not in r and r["data"] == "real"
    first = rec.take()[:len(trainer)]        # the benchmark's first step: its FLOP count
    assert [c["phase"] for c in first] == [c["phase"] for c in trainer]
    for a, b in zip(trainer, first):
        assert a["stats"] == b["stats"], a["phase"]
        assert len(a["grads"]) == len(b["grads"])
        assert [g is None for g in a["grads"]] == [g is None for g in b["grads"]], a["phase"]
        assert sum(g is not None for g in a["grads"]) > 0, a["phase"]
        for ga, gb in zip(a["grads"], b["grads"]):
            assert ga is None or torch.equal(ga, gb), a["phase"]
    (s,) = bench.main(step_args(toy_data, tmp_path) + ["--train-only"] + FAST)     # synthetic batches
    synthetic = rec.take()[0]
    assert synthetic["phase"] == "Gmain" and synthetic["stats"]["G/loss"] != trainer[0]["stats"]["G/loss"]


def test_synthetic_batches_have_the_datasets_keys_and_shapes(toy_data):   # noqa: F811
    """synthetic_batch against a collated batch of the real dataset for the same config (ray patches
    included): the same keys, shapes and dtypes; distinct ids; ortho cameras orthographic, the perspective
    ones not; patch pixel centres inside the image."""
    from _train.eg3dc.train import config_from_args
    cfg = config_from_args(step_args(toy_data, "/unused", **{"ortho-views": "front,back,left", "ray-views": 3}))
    ds = training_loop.build_dataset(cfg)
    real = collate([ds[i] for i in range(cfg.batch)])
    G = train_step.build_networks(cfg)[0]
    fake = bench.synthetic_batch(cfg, G, 7)
    assert set(fake) == set(real) and any(k.startswith("ray_") for k in fake)
    for k, v in real.items():
        if torch.is_tensor(v):
            assert fake[k].shape == v.shape and fake[k].dtype == v.dtype, k
        else:
            assert isinstance(fake[k], list) and len(fake[k]) == len(v), k
    assert len(set(fake["id"])) == cfg.batch and fake["id"] != bench.synthetic_batch(cfg, G, 8)["id"]
    assert (fake["ortho_cam"][..., 16] < 0).all() and (fake["rgb_cam"][:, 16] > 0).all()
    assert fake["ray_uv"].min() > 0 and fake["ray_uv"].max() < 1
    assert 0 < fake["ortho_alpha"].mean() < 1 and set(fake["rgb_mask"].unique().tolist()) == {0.0, 1.0}
    no_depth = config_from_args(step_args(toy_data, "/unused", **{"ray-depth-weight": 0}))
    assert "ray_xyz" not in bench.synthetic_batch(no_depth, G, 0)
    assert "ray_xyz" not in collate([training_loop.build_dataset(no_depth)[0]])


def test_eg3d_equivalent_recipe_does_eg3ds_work_per_step():
    """Recipe 'tiny' (the EG3D-equivalent step at toy sizes): Gmain every step, density TV every 4, D main
    every step on fresh fakes, R1 every 16, all in fp32 here (R1 in bf16 only when asked); D main's fresh
    fakes cost a second G forward, which its FLOP count shows against D main on Gmain's fakes."""
    (r,) = bench.main(["--train-only", "--bf16", "on"] + FAST)
    assert "error" not in r and r["config"] == "tiny" and r["data"] == "synthetic" and not r["compile"]
    assert r["phases"] == {"Gmain": 1, "Greg": 4, "Dmain": 1, "Dreg": 16} and r["d_fresh_fakes"]
    assert r["precision"] == {"Gmain": "bf16 autocast", "Greg": "fp32", "Dmain": "bf16 autocast", "Dreg": "fp32"}
    t = r["train_step"]
    assert t["steps"] == 16 and len(t["step_ms"]) == 16 and t["nan_skips"] == 0
    assert t["images_per_s"] == pytest.approx(2 * 16 / (sum(t["step_ms"]) / 1000), rel=1e-3)
    assert r["mfu"] == {"train": None}            # no peak on a CPU
    (g,) = bench.main(["--train-only", "--bf16", "on", "--no-d-fresh-fakes", "--r1-interval", "1",
                       "--tv-interval", "1"] + FAST)
    assert not g["d_fresh_fakes"] and g["phases"] == {"Gmain": 1, "Greg": 1, "Dmain": 1, "Dreg": 1}
    assert r["flops"]["Gmain"] == g["flops"]["Gmain"]            # Gmain is the same work in both
    second_forward = r["flops"]["Dmain"] - g["flops"]["Dmain"]
    (n,) = bench.main(["--networks-only", "--bf16", "on", "--mesh-res", "0"] + FAST)
    assert second_forward == n["flops"]["G_forward"] > 0


def test_sweeps_build_the_configurations_they_name():
    """--compile/--bf16/--r1-bf16/--nr: one TrainConfig per combination, eager first; R1's precision is swept
    only where R1 runs under bf16 (the release recipe has no GAN); random weights unless --pretrained."""
    cpu = torch.device("cpu")

    def grid(argv):
        a = bench.parse_args(argv)
        return [(c.neural_rendering_resolution, c.bf16, c.loss.r1_bf16, c.compile)
                for c in bench.configurations(a, bench.base_config(a, cpu), cpu)]

    assert grid(["--config", "eg3d_ffhq512", "--compile", "both", "--r1-bf16", "both", "--bf16", "on"]) == [
        (0, "on", False, False), (0, "on", False, True), (0, "on", True, False), (0, "on", True, True)]
    assert grid(["--config", "release/nova_v1", "--compile", "both", "--r1-bf16", "both", "--nr", "32", "64"]) == [
        (32, "off", False, False), (32, "off", False, True), (64, "off", False, False), (64, "off", False, True)]
    assert grid(["--config", "nova_body", "--bf16", "both", "--r1-bf16", "both"]) == [
        (0, "off", False, None), (0, "on", False, None), (0, "on", True, None)]
    a = bench.parse_args(["--config", "nova_body"])
    cfg = bench.base_config(a, cpu)
    assert cfg.g_kwargs["encoder_weights"] is None and cfg.loss.lpips_random_init and not cfg.loss.d_fresh_fakes
    a = bench.parse_args(["--config", "nova_body", "--pretrained"])
    cfg = bench.base_config(a, cpu)
    assert cfg.g_kwargs["encoder_weights"] == "imagenet" and not cfg.loss.lpips_random_init
    with pytest.raises(SystemExit):
        bench.parse_args(["--train-only", "--networks-only"])


def test_compiled_benchmark_runs_the_trainers_compiled_step(monkeypatch):
    """--compile on a CPU (torch.compile stood in by a pass-through): the step's G parts, ray march and D are
    the trainer's compiled handles, the compiled arithmetic is on during the step and restored afterwards."""
    from training import volumetric_rendering as vr
    wrapped, lookups = [], []

    def fake_compile(fn=None, **kw):
        wrapped.append(getattr(fn, "__name__", type(fn).__name__))

        def run(*args, **kwargs):
            lookups.append(vr.LOOKUP)
            return fn(*args, **kwargs)
        return run

    monkeypatch.setattr(torch, "compile", fake_compile)
    before = vr.LOOKUP
    (r,) = bench.main(["--train-only", "--compile", "--r1-interval", "1", "--tv-interval", "1"] + FAST)
    assert "error" not in r and r["compile"] and r["compile_mode"] == "default"
    assert {"render_field", "render_field_rays", "DualDiscriminator"} <= set(wrapped)
    assert lookups and set(lookups) == {"triton"} and vr.LOOKUP == before
    assert r["train_step"]["first_step_s"] > 0 and r["train_step"]["images_per_s"] > 0


def test_bench_failures_are_recorded_per_configuration(monkeypatch):
    def oom(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")

    def no_compile(*args, **kwargs):
        raise RuntimeError("simulated compile failure")

    monkeypatch.setattr(bench, "time_steps", oom)
    monkeypatch.setattr(torch, "compile", no_compile)
    res = bench.main(["--compile-infer", "--bf16", "both", "--peak-tflops", "1", "--mesh-res", "0"] + FAST)
    assert len(res) == 2
    for r in res:
        assert "error" not in r
        assert r["train_step"]["error"] == "OOM" and r["train_step"]["first_step_s"] > 0
        ci = r["G_inference_batch1_compiled"]
        assert ci["mode"] == "reduce-overhead" and "simulated compile failure" in ci["error"]
        assert r["G_inference_batch1"]["ms"] > 0           # the eager timing is still there
        assert r["peak_flops"] == 1e12 and r["mfu"]["G_forward"] > 0 and r["mfu"]["train"] is None


def test_peak_flops_table():
    class A:
        peak_tflops = None
    assert bench.peak_flops("NVIDIA H100 80GB HBM3", A)[0] == 989.4e12
    assert bench.peak_flops("NVIDIA H100 PCIe", A)[0] == 756e12
    assert bench.peak_flops("NVIDIA H200", A)[0] == 989.4e12
    assert bench.peak_flops("CPU (x86_64, 2 threads)", A)[0] is None
    assert bench.peak_flops("Some GPU", A)[0] is None
    A.peak_tflops = 100.0
    assert bench.peak_flops("CPU (x86_64, 2 threads)", A) == (100e12, "--peak-tflops")


def test_networks_only_parts_mesh_and_json(tmp_path):
    """--networks-only: G/D alone, G's parts and the mesh (median level: a surface even untrained), no step;
    the JSON file is what main returns."""
    out = tmp_path / "b.json"
    res = bench.main(["--networks-only", "--parts", "--mesh-res", "16", "--mesh-level", "median",
                      "--json", str(out)] + FAST)
    assert json.loads(out.read_text()) == json.loads(json.dumps(res))
    (r,) = res
    assert "error" not in r and "train_step" not in r
    assert set(r["parts"]) == {"encoder", "synthesize", "render", "superresolution"}
    assert r["G_forward_backward"]["ms"] > r["G_forward"]["ms"] > 0
    m = r["mesh"]
    assert "error" not in m and m["resolution"] == 16 and m["faces"] > 0 and m["vertices"] > 0


def test_phase_times_and_side_by_side_lock(tmp_path):
    """--phase-times: each phase of one more cycle and the EMA timed; --gpu-lock: this run marked compiled
    for its peers after its first step."""
    lock = tmp_path / "gpu.lock"
    (r,) = bench.main(["--train-only", "--phase-times", "--gpu-lock", str(lock), "--r1-interval", "2",
                       "--tv-interval", "2"] + FAST)
    assert "error" not in r and list(tmp_path.glob("gpu.lock.ready.*"))
    t = r["train_step"]
    assert t["steps"] == 2 and set(t["phase_ms"]) == {"Gmain", "Greg", "Dmain", "Dreg", "ema"}
    assert all(v > 0 for v in t["phase_ms"].values())


def test_kernel_classes_sum_device_time_by_kind():
    from types import SimpleNamespace as E
    events = [E(key="void cudnn::engines_precompiled::nchwToNhwcKernel<bf16>", self_device_time_total=3000),
              E(key="sm90_xmma_fprop_implicit_gemm_bf16", self_device_time_total=5000),
              E(key="triton_poi_fused_add_mul_0", self_device_time_total=1000),
              E(key="triton_red_fused_sum_1", self_device_time_total=500),
              E(key="aten::convolution", self_device_time_total=5000)]         # an op, not a kernel: skipped
    text = bench.kernel_classes(events)
    assert "(9.5 ms)" in text
    rows = {line.strip().split("  ")[0]: line for line in text.splitlines()[1:]}
    assert "5.00 ms" in rows["convolutions (cuDNN/CUTLASS)"] and "3.00 ms" in rows["layout transposes (cuDNN)"]
    assert "1.00 ms" in rows["triton pointwise"] and "0.50 ms" in rows["triton reductions"]


def test_trace_kernels_charges_kernels_to_their_graph_call(tmp_path, capsys):
    """Each kernel goes to the compiled-graph call whose CPU range holds its launch (per thread), the rest
    to eager; graphs in launch order; a file that is not a trace is one clear error."""
    import gzip

    from _scripts.bench import trace_kernels as tk
    from training.errors import UserError

    def call(name, ts, dur, tid=1):
        return {"cat": "cpu_op", "name": f"## Call CompiledFxGraph {name}", "ts": ts, "dur": dur, "tid": tid}

    def launch(corr, ts, tid=1, api="cudaGraphLaunch"):
        return {"cat": "cuda_runtime", "name": api, "ts": ts, "dur": 1, "tid": tid, "args": {"correlation": corr}}

    def kernel(corr, name, us):
        return {"cat": "kernel", "name": name, "ts": 0, "dur": us, "args": {"correlation": corr}}

    events = [call("fsr_backward_hash", 500, 100, tid=2), call("fbackbone_fwd_h", 100, 50),
              launch(1, 120), launch(2, 130), launch(3, 510, tid=2), launch(4, 300, api="cudaLaunchKernel"),
              launch(5, 520, tid=1),       # thread 1 at 520: outside its only range -> eager
              kernel(1, "conv_a", 2000), kernel(2, "conv_a", 1000), kernel(3, "triton_red_b", 4000),
              kernel(4, "copy_c", 500), kernel(5, "adam", 250)]
    path = tmp_path / "t.json.gz"
    with gzip.open(path, "wt") as f:
        json.dump({"traceEvents": events}, f)
    groups = tk.main([str(path), "--top", "1"])
    assert [g["graph"] for g in groups[:2]] == ["fbackbone_fw", "fsr_backward"]
    assert groups[0]["kernels"] == {"conv_a": [2, 3.0]} and groups[1]["kernels"] == {"triton_red_b": [1, 4.0]}
    eager = {g["graph"]: g["ms"] for g in groups[2:]}
    assert eager == {"eager (cudaLaunchKernel)": 0.5, "eager (cudaGraphLaunch)": 0.25}
    assert "GPU time 7.8 ms" in capsys.readouterr().out
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(UserError, match="not a chrome trace"):
        tk.load_trace(str(bad))


def test_bench_part_variants_cpu(tmp_path):
    """_scripts.bench.variants (comparisons of single parts) on the CPU, eager: each requested variant timed
    or its error recorded, the JSON rewritten, the switches it flips restored afterwards."""
    from _scripts.bench import variants
    from training import networks_stylegan2 as nets
    from training import volumetric_rendering as vr
    before = (dict(nets.FOLD), vr.LOOKUP, nets.CHANNELS_LAST_GRADS)
    out = tmp_path / "v.json"
    res = variants.main(["--device", "cpu", "--no-compile", "--steps", "1", "--warmup", "0", "--parts", "lookup",
                         "sr", "D", "--sr-variants", "base", "no_noise_cl", "--cl-variants", "base", "cl",
                         "--json", str(out)])
    assert (dict(nets.FOLD), vr.LOOKUP, nets.CHANNELS_LAST_GRADS) == before
    assert json.loads(out.read_text()) == json.loads(json.dumps(res))
    assert res["lookup"]["gather forward"]["ms"] > 0 and res["lookup"]["gather forward+backward"]["ms"] > 0
    assert set(res["sr"]) == {"base", "no_noise_cl"} and all(v["ms"] > 0 for v in res["sr"].values())
    assert set(res["D"]) == {"base", "cl"} and all(v["ms"] > 0 for v in res["D"].values())

"""_scripts.bench.models on the tiny preset (CPU): the JSON keys the GPU runs rely on, and that failures
(out of memory, a compile error) are recorded per configuration instead of ending the benchmark."""
import json

import torch

from _scripts.bench import models as bench


def test_bench_models_tiny(tmp_path):
    out = tmp_path / "b.json"
    res = bench.main(["--preset", "tiny", "--batch", "2", "--train-step", "--mesh-res", "16", "--steps", "1",
                      "--warmup", "0", "--threads", "1", "--json", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(res))
    (r,) = res
    assert "error" not in r
    for k in ("G_forward", "G_forward_backward", "D_forward", "D_forward_backward", "G_inference_batch1"):
        assert r[k]["ms"] > 0 and r[k]["peak_gib"] > 0
    fl = r["flops"]
    assert r["flops_per_train_image"] > 0 and "matmul/conv" in r["flops_note"]
    assert 0 < fl["G_forward"] < fl["G_forward_backward"] and fl["D_forward_backward"] > 0
    assert fl["train_G_main"] > 0 and fl["train_D_main"] > 0 and fl["train_R1"] > 0
    per_image = (fl["train_G_main"] + fl["train_D_main"] + fl["train_R1"] / 16) / 2
    assert abs(r["flops_per_train_image"] - per_image) < 1
    t = r["train_step"]
    assert t["steps"] == 16 and t["images_per_s"] > 0 and t["ms_r1_step"] > 0 and t["achieved_tflops"] > 0
    p = t["pipelined"]          # the same 16 steps back to back: one R1 step, the 16th
    assert len(p["step_ms"]) == 16 and p["step_ms"][-1] == round(p["ms_r1_step"], 2) and p["ms"] > 0
    assert abs(p["images_per_s"] - 2 / (p["ms_mean_with_r1"] / 1000)) < 1e-6
    assert r["peak_flops"] is None and r["mfu"] == {"G_forward": None, "train": None}     # CPU: n/a
    m = r["mesh"]
    assert "error" not in m and m["resolution"] == 16
    assert m["grid_s"] > 0 and m["extract_mesh_s"] > 0 and m["faces"] >= 0 and m["vertices"] >= 0


def test_bench_models_mfu_and_failures(tmp_path, monkeypatch):
    def oom(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")

    def no_compile(*args, **kwargs):
        raise RuntimeError("simulated compile failure")

    monkeypatch.setattr(bench, "train_steps", oom)
    monkeypatch.setattr(torch, "compile", no_compile)
    res = bench.main(["--preset", "tiny", "--batch", "2", "--train-step", "--compile-infer", "--steps", "1",
                      "--warmup", "0", "--threads", "1", "--bf16", "both", "--peak-tflops", "1"])
    assert len(res) == 2
    for r in res:
        assert "error" not in r
        assert r["train_step"] == {"error": "OOM"}
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


def test_compile_d_serves_first_order_phases_only(monkeypatch):
    """--compile-d: the compiled D runs G main and D main; R1 (double backward) keeps calling the eager D."""
    from training.dual_discriminator import DualDiscriminator
    calls = {"compiled": 0, "eager_r1": 0}
    compiled, states = [], []       # (batch, D trains) of each compiled call with autograd on

    def fake_compile(mod, **kw):
        assert isinstance(mod, DualDiscriminator)
        compiled.append(mod)

        def run(img, c, **kwargs):
            calls["compiled"] += 1
            if torch.is_grad_enabled():
                states.append((c.shape[0], any(p.requires_grad for p in mod.parameters())))
            return mod(img, c, **kwargs)
        return run

    real_r1 = bench.r1_terms

    def counting_r1(*args, **kwargs):
        calls["eager_r1"] += 1
        return real_r1(*args, **kwargs)

    monkeypatch.setattr(torch, "compile", fake_compile)
    monkeypatch.setattr(bench, "r1_terms", counting_r1)
    (r,) = bench.main(["--preset", "tiny", "--batch", "2", "--train-step", "--compile-d", "--r1-bf16",
                       "--bf16", "on", "--steps", "1", "--warmup", "0", "--threads", "1", "--mesh-res", "0"])
    assert "error" not in r and r["compile_d"] and r["r1_bf16"] and len(compiled) == 1
    # D forward (+backward) timings and 16 train steps x (1 G main + 2 D main) went through the compiled D
    assert calls["compiled"] >= 16 * 3 and calls["eager_r1"] >= 1
    # the train steps (the last 16 x 3 calls: batch 2 cannot be joined) see D frozen in every G main, the first
    # included, as in the trainer: a compiled D first traced trainable would go on computing D's weight
    # gradients in each G main (dynamo does not guard on requires_grad by default: training_loop.guard_requires_grad)
    assert [trains for _, trains in states[-48:]] == [False, True, True] * 16
    assert r["train_step"]["images_per_s"] > 0


def test_bench_variants_parts_and_train_only():
    """The session-4 switches: arithmetic variants recorded and restored afterwards, the parts timed,
    --train-only skipping the separate G/D timings and batch-1 inference, and unfolding cutting FLOPs."""
    from training import networks_stylegan2 as nets
    from training import volumetric_rendering as vr
    before = (dict(nets.FOLD), vr.LOOKUP)
    common = ["--preset", "tiny", "--batch", "2", "--steps", "1", "--warmup", "0", "--threads", "1",
              "--mesh-res", "0"]
    (r,) = bench.main(common + ["--parts", "--train-step", "--train-only", "--fold", "off", "--lookup", "gather",
                                "--channels-last"])
    assert (dict(nets.FOLD), vr.LOOKUP) == before
    assert "error" not in r and r["channels_last"] and r["lookup"] == "gather"
    assert r["fold"] == {"up": False, "down": False, "down_1x1": False}
    assert set(r["parts"]) == {"encoder", "synthesize", "render", "superresolution"}
    assert all(v["ms"] > 0 for v in r["parts"].values())
    assert r["train_step"]["images_per_s"] > 0
    assert not {"G_forward", "D_forward", "G_inference_batch1"} & set(r)
    (f,) = bench.main(common + ["--fold", "on"])
    assert f["fold"] == {"up": True, "down": True, "down_1x1": True} and f["lookup"] == "grid_sample"
    assert f["flops"]["G_forward"] > 1.2 * r["flops"]["G_forward"]
    assert f["flops"]["D_forward_backward"] > 1.5 * r["flops"]["D_forward_backward"]


def test_bench_side_by_side_phases_and_layouts(tmp_path):
    """The session-6 switches: per-phase times, the side-by-side lock (the first, compiling, step before it;
    this run marked compiled for its peers), channels-last in chosen parts only, R1's layout and inductor's
    layout choice recorded; an unknown part is refused."""
    from torch._inductor import config as inductor_config
    from training import networks_stylegan2 as nets
    lock = tmp_path / "gpu.lock"
    before = inductor_config.force_layout_optimization
    (r,) = bench.main(["--preset", "tiny", "--batch", "2", "--steps", "1", "--warmup", "0", "--threads", "1",
                       "--mesh-res", "0", "--train-step", "--train-only", "--phase-times", "--gpu-lock", str(lock),
                       "--channels-last", "superresolution", "--r1-layout", "nchw", "--layout-opt", "auto"])
    assert "error" not in r and inductor_config.force_layout_optimization == before
    assert r["channels_last"] == "superresolution" and r["r1_layout"] == "nchw" and r["layout_opt"] == "auto"
    assert r["train_compile_s"] > 0 and list(tmp_path.glob("gpu.lock.ready.*"))
    t = r["train_step"]
    assert set(t["phase_ms"]) == {"G_main", "D_main", "R1"} and all(v > 0 for v in t["phase_ms"].values())
    G = bench.build_preset("tiny")
    assert nets.set_channels_last(G.superresolution) == 2 and nets.set_channels_last(G) > 2   # parts differ
    try:
        bench.parse_args(["--channels-last", "superresolution,nope"])
        raise AssertionError("an unknown part was accepted")
    except SystemExit:
        pass


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

    import pytest

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
    """_scripts.bench.variants (the session-7 comparisons of single parts) on the CPU, eager: each requested
    variant timed or its error recorded, the JSON rewritten, the switches it flips restored afterwards."""
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

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
    compiled = []

    def fake_compile(mod, **kw):
        assert isinstance(mod, DualDiscriminator)
        compiled.append(mod)

        def run(*args, **kwargs):
            calls["compiled"] += 1
            return mod(*args, **kwargs)
        return run

    real_r1 = bench.r1_penalty

    def counting_r1(*args, **kwargs):
        calls["eager_r1"] += 1
        return real_r1(*args, **kwargs)

    monkeypatch.setattr(torch, "compile", fake_compile)
    monkeypatch.setattr(bench, "r1_penalty", counting_r1)
    (r,) = bench.main(["--preset", "tiny", "--batch", "2", "--train-step", "--compile-d", "--r1-bf16",
                       "--bf16", "on", "--steps", "1", "--warmup", "0", "--threads", "1", "--mesh-res", "0"])
    assert "error" not in r and r["compile_d"] and r["r1_bf16"] and len(compiled) == 1
    # D forward (+backward) timings and 16 train steps x (1 G main + 2 D main) went through the compiled D
    assert calls["compiled"] >= 16 * 3 and calls["eager_r1"] >= 1
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

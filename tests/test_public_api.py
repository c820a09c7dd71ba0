"""The names users import and the commands the docs show: every public name that README.md, docs/ and the
seed's commands use imports from where they say, and every documented ``python -m`` command answers
``--help``."""
from __future__ import annotations

import importlib
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# module -> names: the seed's (REFERENCE section 7) and the ones the docs tell users to import
PUBLIC = {
    "training.triplane": ["TriPlaneGenerator", "TriPlaneGenerator_v0", "TriPlaneGenerator_v1", "GENERATORS",
                          "PRESETS", "build_preset"],
    "training.dual_discriminator": ["DualDiscriminator", "MaskDualDiscriminator"],
    "training.networks_stylegan2": ["SynthesisBlock", "MappingNetwork"],
    "training.superresolution": [],
    "training.volumetric_rendering": ["crop_density"],
    "training.encoders": ["ResNetEncoder"],
    "training.fusion": ["FUSIONS"],
    "training.loss": ["LossConfig", "ReconGANLoss"],
    "training.dataset": ["CharacterDataset", "RaySampling", "collate"],
    "training.training_loop": ["TrainConfig", "train"],
    "training.checkpoint": ["load_checkpoint", "load_generator", "save_checkpoint", "export_bf16"],
    "training.cameras": ["FRAMINGS", "ORTHO_VIEWS", "view_set", "rays", "make_view"],
    "training.configs": [],
    "training.paths": ["data_root", "read_subset"],
    "training.errors": ["UserError", "cli_main", "atomic_write"],
    "training.jobs": ["JobReport", "data_job_main"],
    "training.data.assets.load": ["load_character"],
    "training.data.synth": ["write_dataset", "char_id"],
    "training.data.raster": ["Rasteriser", "render_views"],
    "training.data.render": ["RenderSettings", "render_character"],
    "training.data.catalog": ["load_char_meta", "load_renderset_meta", "select_ids"],
    "training.data.clean": ["run_clean", "split_ids"],
    "training.data.masks": ["generate_masks"],
    "training.data.features": ["generate_features", "build_feature_encoder"],
    "training.run.train_step": ["TrainStep", "build_models"],
    "training.run.distributed": ["Dist", "setup_distributed"],
    "training.run.compiler": ["COMPILE_MODES", "resolve_compile"],
    "training.run.snapshots": ["latest_snapshot", "save_snapshot", "load_snapshot"],
    "training.eval": ["ImageMetrics", "psnr", "ssim", "geometry_scores"],
    "training.eval.generate": ["resolve_inferquery"],
    "training.infer.reconstruct": ["reconstruct"],
    "training.infer.meshing": ["extract_mesh", "density_grid"],
    "training.infer.release": [],
    "training.infer.texture": [],
}


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_public_names_import(module):
    m = importlib.import_module(module)
    missing = [n for n in PUBLIC[module] if not hasattr(m, n)]
    assert not missing, f"{module} lacks {missing}"


def test_seed_generator_module_paths_resolve():
    """``--generator_module training.triplane.TriPlaneGenerator_v1`` and the class paths checkpoints store."""
    from training.checkpoint import build_module  # noqa: F401  (the loader of stored class paths)
    for path in ("training.triplane.TriPlaneGenerator", "training.triplane.TriPlaneGenerator_v0",
                 "training.triplane.TriPlaneGenerator_v1", "training.dual_discriminator.MaskDualDiscriminator"):
        mod, _, name = path.rpartition(".")
        assert isinstance(getattr(importlib.import_module(mod), name), type), path


def documented_modules() -> list[str]:
    mods = set()
    for p in DOCS:
        mods |= set(re.findall(r"python -m ((?:_scripts|_train|training)(?:\.\w+)+)", p.read_text()))
    return sorted(mods)


def test_docs_name_commands():
    mods = documented_modules()
    assert "_scripts.infer" in mods and "_train.eg3dc.train" in mods and len(mods) >= 20, mods


def _help(module: str) -> tuple[str, int, str]:
    r = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    return module, r.returncode, r.stdout + r.stderr


def test_documented_commands_answer_help():
    with ThreadPoolExecutor(2) as ex:
        results = list(ex.map(_help, documented_modules()))
    bad = [(m, rc, out[-300:]) for m, rc, out in results if rc != 0 or "usage" not in out.lower()]
    assert not bad, bad
    # the documented shell launchers answer --help too (the trainer's, through the one launcher)
    for cmd in (["bash", "make/quickstart", "--help"], ["bash", "_configs/launch.sh", "--help"]):
        r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                           env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"})
        out = (r.stdout + r.stderr).lower()
        assert r.returncode == 0 and ("usage" in out or "options" in out), (cmd, r.stdout[-300:], r.stderr[-300:])


def test_release_registry_found_from_the_library():
    """The registry sits at the repository root whichever subpackage resolves it (--model NAME, the default)."""
    from training.infer import release
    assert release.REGISTRY == ROOT / "_configs" / "release.toml" and release.REGISTRY.is_file()

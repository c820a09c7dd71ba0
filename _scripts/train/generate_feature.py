"""Precompute image-encoder features of the ortho front/back views.

Writes renders/<rs>/ortho_katepca_chonk/<shard>/<id>/<view>.pt (fp16 [C,h,w])
plus <view>_mirror.pt for the horizontally mirrored image, and
ortho_katepca_chonk/feature_info.json describing the encoder (training refuses
random-init features and mixing encoders).

    python -m _scripts.train.generate_feature --renderset human --weights imagenet
    python -m _scripts.train.generate_feature --renderset human --weights resnet50.pth --device cuda
"""
from __future__ import annotations

import argparse

from training import paths
from training.data import catalog, features
from training.errors import UserError
from training.jobs import JobReport, data_job_main


def parser(default_dataset: str | None = None) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--renderset", default=None, help="renders/<NAME> (default: the dataset name)")
    ap.add_argument("--dataset", default=default_dataset,
                    help="only the characters of subsets/<NAME>_<split>.csv (default: every finished character)")
    ap.add_argument("--split", default="all")
    ap.add_argument("--weights", default=None,
                    help="'imagenet' (torchvision file in the torch hub cache) or a ResNet / encoder state dict path")
    ap.add_argument("--random-init", action="store_true",
                    help="use an untrained encoder on purpose (marked in feature_info.json; training refuses it by default)")
    ap.add_argument("--depth", type=int, default=50, help="ResNet depth (18, 34, 50, 101, 152)")
    ap.add_argument("--layer", choices=["trunk", "out"], default="trunk",
                    help="trunk: ResNet layer4 output (frozen features); out: after the encoder's projection")
    ap.add_argument("--out-channels", type=int, default=512, help="projection width for --layer out")
    ap.add_argument("--size", type=int, default=256, help="input size (256 -> 8x8 features)")
    ap.add_argument("--views", default="front,back")
    ap.add_argument("--no-mirror", action="store_true", help="skip the features of the mirrored images")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    ap.add_argument("--seed", type=int, default=0, help="init seed with --random-init")
    ap.add_argument("--overwrite", action="store_true", help="recompute everything (required to change encoder)")
    ap.add_argument("--quiet", action="store_true")
    paths.add_data_root_arg(ap)
    return ap


def run(argv=None, default_dataset: str | None = None) -> JobReport:
    import torch
    a = parser(default_dataset).parse_args(argv)
    renderset = a.renderset or a.dataset
    if not renderset:
        raise UserError("--renderset (or --dataset) is required")
    if a.batch < 1 or a.size < 32:
        raise UserError("--batch must be >= 1 and --size >= 32")
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {a.device}: CUDA is not available here")
    root = paths.data_root(a.data_root)
    ids = catalog.select_ids(root, renderset, a.dataset, a.split)
    if not ids:
        raise UserError(f"{paths.renders_dir(root, renderset)}: no finished characters to encode")
    enc, info = features.build_feature_encoder(a.weights, a.random_init, a.depth, a.layer, a.out_channels,
                                                 a.seed, a.device)
    job = features.FeatureJob(views=tuple(v for v in a.views.split(",") if v), size=a.size, batch=a.batch,
                                mirror=not a.no_mirror, overwrite=a.overwrite)
    report = JobReport("generate_feature", features.feature_dir(root, renderset) / "failures.jsonl",
                       done_word="features written")
    r = features.generate_features(root, renderset, ids, enc, info, job, a.device, progress=not a.quiet)
    report.done(r["written"])
    report.skipped(r["skipped"])
    for e in r["errors"]:
        report.failed(e.split(": ")[0], e)
    report.notes.append(f"{len(ids)} characters, shape {r['shape']}, weights {info['weights']} "
                        f"-> {features.feature_dir(root, renderset)}")
    return report.finish()


@data_job_main
def main(argv=None):
    return run(argv)


if __name__ == "__main__":
    main()

"""The command line on real photos: ``pseudo-masks`` with its defaults, then
``evaluate-masks`` (object vs background), on a folder built outside the repository.

The folder (``--work``, default a temporary one) gets each photo of the set
(``../shared/realmasks`` by default), ``labels.csv`` naming its target (the
highest-scoring listed ImageNet class of EfficientNet-Lite0, as the benchmark takes
it), the ground truth as label PNGs (0 background, 1 object, 255 the ignore band), and
Lite0's weights with the classifier cut to the targets that occur (the logits of those
classes, hence the maps, are unchanged; VOC's label PNGs hold at most 254 classes).
``pseudo-masks`` runs with its defaults (the segmentation task's settings and threshold);
its masks are made binary (any class = object) and ``evaluate-masks`` scores them. The
benchmark's own numbers at the shipped threshold are printed beside it
(``--scores``: a ``real_photos.py --dump`` file).

Usage::

    python benchmarks/real_photos_cli.py --work /tmp/realmasks_cli \\
        --scores benchmarks/results/real_photos_scores.json
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from captum_shallow import task_defaults
from captum_shallow.datasets import RealPhotoSet, listed_target
from captum_shallow.io import preprocess
from captum_shallow.models import load_model

REPO = Path(__file__).resolve().parents[1]


def build_folder(root: Path, work: Path, every: int) -> None:
    photos = RealPhotoSet(root)
    photos = photos.subset(range(0, len(photos), every))
    model = load_model("efficientnet-lite0").eval()
    size = int(model.input_image_size)
    for folder in ("images", "gt"):
        (work / folder).mkdir(parents=True, exist_ok=True)
    targets = []
    for i in range(len(photos)):
        photo = photos.photo(i)
        with torch.no_grad():
            logits = model(preprocess(photo.image, size)[None])
        targets.append(int(listed_target(logits, [photo.imagenet_indices])[0]))
        image = photos._rows[i].image
        shutil.copyfile(image, work / "images" / f"{photo.name}{image.suffix}")
        truth = photo.mask.numpy().astype(np.uint8)
        truth[photo.ignore.numpy()] = 255
        Image.fromarray(truth, mode="L").save(work / "gt" / f"{photo.name}.png")
    classes = sorted(set(targets))
    (work / "classes.txt").write_text("".join(f"imagenet{c}\n" for c in classes))
    rows = [
        f"{photos.names[i]}{photos._rows[i].image.suffix},imagenet{t}"
        for i, t in enumerate(targets)
    ]
    (work / "labels.csv").write_text("image,classes\n" + "\n".join(rows) + "\n")
    state = model.state_dict()
    keep = torch.tensor(classes)
    state["_fc.weight"], state["_fc.bias"] = state["_fc.weight"][keep], state["_fc.bias"][keep]
    torch.save(state, work / "lite0_targets.pth")
    (work / "object.txt").write_text("object\n")


def binarise(source: Path, target: Path) -> None:
    target.mkdir(exist_ok=True)
    for path in sorted(source.glob("*.png")):
        labels = np.array(Image.open(path))
        Image.fromarray((labels > 0).astype(np.uint8), mode="L").save(target / path.name)


def mean_iou(work: Path) -> float:
    """The object IoU of each written mask (the ignore band left out), averaged."""
    values = []
    for path in sorted((work / "pred01").glob("*.png")):
        pred = np.array(Image.open(path)) > 0
        truth = np.array(Image.open(work / "gt" / path.name))
        valid = truth != 255
        inter = (pred & (truth == 1) & valid).sum()
        union = ((pred | (truth == 1)) & valid).sum()
        values.append(inter / union if union else 0.0)
    return float(np.mean(values))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("root", nargs="?", default=str(REPO.parent / "shared" / "realmasks"))
    parser.add_argument("--work", default=None, help="the folder to build (outside the repo)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--scores", default=None, help="real_photos.py --dump file")
    parser.add_argument(
        "--every", type=int, default=1, help="every N-th photo only (the multi-scale subset)"
    )
    parser.add_argument(
        "--options", default="", help='further pseudo-masks options, e.g. "--scales 1 --no-flips"'
    )
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="realmasks_cli_"))
    if work.resolve().is_relative_to(REPO):
        parser.error("--work must lie outside the repository")
    start = time.perf_counter()
    build_folder(Path(args.root), work, args.every)
    command = [sys.executable, "-m", "captum_shallow", "pseudo-masks", "--dataset", "folder"]
    command += ["--root", str(work / "images"), "--labels", str(work / "labels.csv")]
    command += ["--classes", str(work / "classes.txt"), "--arch", "efficientnet-lite0"]
    command += ["--weights", str(work / "lite0_targets.pth"), "--out", str(work / "pred")]
    command += ["--workers", "0", "--threads", str(args.threads), *shlex.split(args.options)]
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True)
    binarise(work / "pred", work / "pred01")
    evaluate = [sys.executable, "-m", "captum_shallow", "evaluate-masks"]
    evaluate += ["--pred", str(work / "pred01"), "--gt", str(work / "gt")]
    evaluate += ["--classes", str(work / "object.txt"), "--json", str(work / "eval.json")]
    print("$", " ".join(evaluate), flush=True)
    subprocess.run(evaluate, check=True)
    table = json.loads((work / "eval.json").read_text())
    print(f"evaluate-masks: object IoU {table['classes']['object']:.3f}, mIoU {table['miou']:.3f}")
    print(f"mean over photos of the object IoU of the CLI's masks: {mean_iou(work):.3f}")
    threshold = task_defaults("segmentation").threshold
    if args.scores:
        document = json.loads(Path(args.scores).read_text())
        choice = document.get("choice", {}).get("segmentation", {})
        key = choice.get("key")
        curves = document["values"]["efficientnet-lite0"].get(key, {}).get("all", {})
        if curves:
            index = round(threshold * 100)
            print(
                f"benchmark, {key} on Lite0 at t = {threshold:.2f}: mean IoU over photos "
                f"{curves['iou'][index]:.3f}, pooled mIoU {curves['miou'][index]:.3f}"
            )
    print(f"{time.perf_counter() - start:.0f} s; folder {work}")


if __name__ == "__main__":
    main()

"""``captum-shallow explain IMAGE...``: a fused map and a figure per image, and
with ``--html`` one interactive page of them all.

Every image is read once before anything is written, so a bad path or file
fails the run with nothing on disk; outputs then appear one by one, each
written atomically (the page last, once every image is explained).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from captum_shallow.io import preprocess, read_image
from captum_shallow.io._paths import name_limit
from captum_shallow.visualization import (
    ExplainedImage,
    attribution_figure,
    display_scaling,
    explain_images,
)
from captum_shallow.visualization._explorer import explorer_for

from ._errors import CLIError
from ._files import check_replaceable, make_folder, write_arrays, write_figure
from ._options import (
    add_cam_options,
    add_model_options,
    build_shallowcam,
    load_model_from_args,
    one_line,
    parse_target,
    positive_int,
    resolve_layer_spec,
    settings_caption,
)

NAME = "explain"
DPI = 100
#: Suffixes of the files written per image: ``<stem>.cam.png``, ``<stem>.maps.npz``.
FIGURE_SUFFIX = ".cam.png"
MAPS_SUFFIX = ".maps.npz"
#: The page ``--html`` writes in ``--out``.
REPORT_NAME = "report.html"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``explain`` on the ``captum-shallow`` subparsers.

    Args:
        subparsers: What ``ArgumentParser.add_subparsers`` returned.

    Returns:
        argparse.ArgumentParser: The subcommand's parser.
    """
    parser: argparse.ArgumentParser = subparsers.add_parser(
        NAME,
        help="explain your images: a fused shallow CAM and a figure per image",
        description=(
            "Compute a ShallowCAM per image and write <stem>.cam.png (the photo, each "
            "layer's map and the fused map) and, with --save-maps, <stem>.maps.npz; "
            f"with --html, one self-contained {REPORT_NAME} to explore the maps."
        ),
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    add_model_options(parser)
    add_cam_options(parser)
    parser.add_argument(
        "--target",
        default="auto",
        help="auto (each image's top prediction), a class index or a class name",
    )
    parser.add_argument(
        "--out",
        default="captum-shallow-out",
        metavar="DIR",
        help="output folder (default: captum-shallow-out)",
    )
    parser.add_argument(
        "--save-maps",
        action="store_true",
        help="also write the raw maps (fused and per layer) as <stem>.maps.npz",
    )
    parser.add_argument(
        "--html",
        action="store_true",
        help=f"also write {REPORT_NAME}: one self-contained page (no network needed) with "
        "each image's top-5 classes, every layer's map, the fused map recomputed as you "
        "toggle layers, and opacity and background-threshold sliders",
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=8,
        metavar="N",
        help="images per pass (default: 8)",
    )
    return parser


def run(args: argparse.Namespace) -> int:
    """Explain each image and write its figure (and maps).

    Args:
        args (argparse.Namespace): The parsed options.

    Returns:
        int: 0.
    """
    for path in args.images:  # fail before writing anything
        _read(path)
    loaded = load_model_from_args(args)
    target = parse_target(args.target, loaded.classes)
    names, layers = resolve_layer_spec(loaded.model, args.layers)
    cam = build_shallowcam(args, loaded.model, layers)
    stems = _output_stems(args.images)
    _check_outputs(args, stems)
    scaling = display_scaling(cam.fusion, len(layers))
    method = cam.method
    truncated = cam.settings()["truncation"]
    caption = settings_caption(cam, "All maps: ShallowCAM")
    explained: list[ExplainedImage] = []  # for --html
    folder: Path | None = None  # created with the first output, after every check passed
    many = len(args.images) > 1
    with tqdm(total=len(args.images), unit="image", disable=None if many else True) as bar:
        for start in range(0, len(args.images), args.batch_size):
            paths = args.images[start : start + args.batch_size]
            photos = [_read(path) for path in paths]
            inputs = torch.stack([preprocess(photo, loaded.input_size) for photo in photos])
            inputs = inputs.to(loaded.device)
            with torch.no_grad():
                probabilities = loaded.model(inputs).softmax(dim=1)
            top = probabilities.argmax(dim=1).tolist()
            targets: list[int] = top if target is None else [target] * len(paths)
            try:
                fused, layer_maps = cam.attribute(inputs, target=targets, return_layer_maps=True)
            except ValueError as error:
                raise CLIError(one_line(error)) from None
            folder = folder or make_folder(args.out)
            for i, (path, photo) in enumerate(zip(paths, photos, strict=True)):
                index = targets[i]
                probability = float(probabilities[i, index])
                label = f"{loaded.classes[index]} ({index}), p = {probability:.2f}"
                panels: list[tuple[str, Tensor | None]] = [(Path(path).name, None)]
                panels += [
                    (f"{method.__name__} at {name}\n{_size(m)}, {truncated}", m[i])
                    for name, m in zip(names, layer_maps, strict=True)
                ]
                panels.append(
                    (
                        f"ShallowCAM, {cam.fusion} of {len(layers)} ({_size(fused)})\n"
                        f"{scaling.label}",
                        scaling(fused[i]),
                    )
                )
                title = f"{loaded.name} on {Path(path).name}: {label}"
                stem = folder / stems[start + i]
                written = write_figure(
                    attribution_figure(photo, panels, title=title, caption=caption),
                    stem.with_name(stem.name + FIGURE_SUFFIX),
                    DPI,
                )
                if args.save_maps:
                    maps = [m[i] for m in layer_maps]
                    archive = _maps_archive(fused[i], maps, names, index, probability)
                    write_arrays(stem.with_name(stem.name + MAPS_SUFFIX), **archive)
                bar.write(f"{path}: {label} -> {written}")
                bar.update(1)
            if args.html:
                names_shown = [Path(path).name for path in paths]
                try:
                    explained += explain_images(
                        cam, inputs, photos, names_shown, loaded.classes, target=target
                    )
                except ValueError as error:
                    raise CLIError(one_line(error)) from None
    if args.html and folder is not None:
        report = explorer_for(
            cam,
            explained,
            loaded.name,
            loaded.input_size,
            title=f"captum-shallow explain: {loaded.name}",
        )
        written = report.save(folder / REPORT_NAME)  # a WriteError is one line already
        print(f"{len(explained)} images -> {written}")
    return 0


def _check_outputs(args: argparse.Namespace, stems: Sequence[str]) -> None:
    """Before any work: no output may land on an input of the run, or on a file
    that the package did not write."""
    out = Path(args.out)
    names = [stem + FIGURE_SUFFIX for stem in stems]
    if args.save_maps:
        names += [stem + MAPS_SUFFIX for stem in stems]
    if args.html:
        names.append(REPORT_NAME)
    inputs = [*args.images, *([args.weights] if args.weights else [])]
    limit = name_limit(out)
    for name in names:
        size = len(os.fsencode(name))
        if size > limit:
            raise CLIError(
                f"the output name {name} is {size} bytes, over the file system's limit of "
                f"{limit}; give the image a shorter name (its stem names the outputs)"
            )
        check_replaceable(out / name, inputs)


def _size(attribution: Tensor) -> str:
    return f"{attribution.shape[-2]}×{attribution.shape[-1]}"


def _read(path: str) -> Tensor:
    try:
        return read_image(path)
    except (FileNotFoundError, ValueError) as error:
        raise CLIError(one_line(error)) from None
    except OSError as error:
        raise CLIError(f"cannot read image {path}: {error.strerror or error}") from None


def _output_stems(paths: Sequence[str]) -> list[str]:
    """One output stem per image: the file's stem, numbered when it is taken.

    Taken means by any earlier stem, numbered or not, compared without case (as a
    case-blind disk does): ``a.jpg a.png a-1.png`` give ``a a-1 a-1-1``.
    """
    stems: list[str] = []
    taken: set[str] = set()
    for path in paths:
        stem = base = Path(path).stem or "image"
        count = 0
        while stem.casefold() in taken:
            count += 1
            stem = f"{base}-{count}"
        taken.add(stem.casefold())
        stems.append(stem)
    return stems


def _maps_archive(
    fused: Tensor,
    layer_maps: Sequence[Tensor],
    names: Sequence[str],
    target: int,
    probability: float,
) -> dict[str, Any]:
    """The ``.npz`` content: fused map, per-layer maps and what they explain."""
    arrays: dict[str, Any] = {
        "fused": fused[0].detach().cpu().numpy(),
        "layers": np.array(list(names)),
        "target": np.array(target),
        "probability": np.array(probability, dtype=np.float32),
    }
    for k, layer_map in enumerate(layer_maps):
        arrays[f"layer_{k}"] = layer_map[0].detach().cpu().numpy()
    return arrays

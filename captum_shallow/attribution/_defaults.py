"""One set of :class:`~captum_shallow.ShallowCAM` defaults per task.

A map to look at (``"localisation"``) and a map to threshold into pseudo-masks
(``"segmentation"``) may want different settings; each task's values are chosen
by the rule in docs/evidence.rst. Arguments given explicitly always win over them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

from ._fusion import _FUSIONS, Fusion
from ._multiscale import check_scales
from ._propagation import GATE_KEYWORDS, GateKeyword, Propagation, check_propagation
from ._truncation import GradientTruncation

Task = Literal["localisation", "segmentation"]


@dataclass(frozen=True)
class TaskDefaults:
    """The settings that :class:`~captum_shallow.ShallowCAM` takes for one task.

    Args:
        fusion (str): How the layer maps are fused (:func:`~captum_shallow.fuse_maps`).
        truncation (GradientTruncation or None): Truncation of each layer's
            gradient where the CAM reads it; None for none.
        propagation (GradientTruncation, str or None): Truncation of the
            gradient while it propagates through the gates (``"positive"``:
            its positive part); None for none.
        gates (str): Where ``propagation`` acts: ``"layers"`` (ShallowCAM's
            layers deeper than the shallowest), ``"relu"`` or ``"relu-below"``.
        threshold (float): Background score in [0, 1] for pseudo-masks: a pixel
            whose every normalised class map is below it is background.
        scales (tuple[float, ...]): Input sizes, relative to the input, whose
            maps are averaged (IRN's multi-scale inference); ``(1.0,)``: one pass.
        flips (bool): Also average the maps of the mirrored inputs.
        class_gate (bool): Multiply the fused map by Grad-CAM at the deepest layer
            (:func:`~captum_shallow.fuse_maps`' ``gate``).

    Examples::

        >>> from captum_shallow import task_defaults
        >>> task_defaults("segmentation").threshold
        0.25
    """

    fusion: Fusion
    truncation: GradientTruncation | None
    propagation: Propagation | None
    gates: GateKeyword
    threshold: float
    scales: tuple[float, ...] = (1.0,)
    flips: bool = False
    class_gate: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "scales", check_scales(self.scales))
        for name in ("flips", "class_gate"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"TaskDefaults: {name} must be a bool, got {getattr(self, name)!r}")
        if self.fusion not in _FUSIONS:
            raise ValueError(f"TaskDefaults: fusion must be one of {_FUSIONS}, got {self.fusion!r}")
        if self.truncation is not None and not isinstance(self.truncation, GradientTruncation):
            raise TypeError(
                "TaskDefaults: truncation must be a GradientTruncation or None, got "
                f"{type(self.truncation).__name__}"
            )
        check_propagation(self.propagation)
        if self.gates not in GATE_KEYWORDS:
            raise ValueError(
                f"TaskDefaults: gates must be one of {GATE_KEYWORDS}, got {self.gates!r}"
            )
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, (int, float)):
            raise TypeError(
                f"TaskDefaults: threshold must be a number, got {type(self.threshold).__name__}"
            )
        if not (math.isfinite(self.threshold) and 0.0 <= self.threshold <= 1.0):
            raise ValueError(f"TaskDefaults: threshold must lie in [0, 1], got {self.threshold}")


#: Each task's defaults, read-only, the one source of ShallowCAM's defaults. Real
#: photos with human masks decide (``benchmarks/real_photos.py``, ``choose_real()``:
#: 130 photos, EfficientNet-Lite0 and Lite1); the synthetic WSSS sets and the grids of
#: ``benchmarks/quality.py`` are constraints: a new default may not lose more than 1
#: point there against the one it replaces. The rule chose one configuration for both
#: tasks: the mean of LayerCAM at each fused layer, no truncation where each layer reads
#: the gradient, only the positive part of the gradient flowing back through every
#: ReLU-family call made before the deepest fused layer returns, and the fused map
#: multiplied by Grad-CAM at the deepest layer (``class_gate``, as Guided Grad-CAM).
#: The scores are in ``benchmarks/results/real_photos_scores.json`` and
#: ``quality_gated_scores.json``; a test re-applies the rule to them (docs/evidence.rst).
#: Neither task averages scales or flips by default (``scales=``/``flips=`` turn them
#: on; docs/evidence.rst says why). The threshold: the best background threshold on
#: the photos, averaged over Lite0 and Lite1 (within 1 point of each model's best IoU).
TASK_DEFAULTS: Mapping[str, TaskDefaults] = MappingProxyType(
    {
        "localisation": TaskDefaults(
            fusion="mean",
            truncation=None,
            propagation="positive",
            gates="relu-below",
            threshold=0.25,
            class_gate=True,
        ),
        "segmentation": TaskDefaults(
            fusion="mean",
            truncation=None,
            propagation="positive",
            gates="relu-below",
            threshold=0.25,
            class_gate=True,
        ),
    }
)
TASKS: tuple[str, ...] = tuple(TASK_DEFAULTS)


def task_defaults(task: str) -> TaskDefaults:
    """The defaults of ``task``: ``"localisation"`` or ``"segmentation"``.

    Args:
        task (str): The task's name.

    Returns:
        TaskDefaults: its fusion, truncation, propagation, gates and threshold.

    Raises:
        ValueError: For any other name.

    Examples::

        >>> from captum_shallow import task_defaults
        >>> task_defaults("localisation").fusion
        'mean'
    """
    if task not in TASK_DEFAULTS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    return TASK_DEFAULTS[task]

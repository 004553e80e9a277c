"""Evaluation of class activation maps: faithfulness, localisation and
weakly-supervised semantic segmentation (WSSS), with a synthetic WSSS benchmark
and a PASCAL VOC 2012 adapter.

Metrics take a forward function returning logits, images ``(N, C, H, W)``, maps
``(N, 1, h, w)`` (upsampled bilinearly to the image size) and targets; they run
batched on the model's device under :func:`torch.no_grad` and never depend on
how the maps were made.
"""

from ._faithfulness import (
    ConfidenceChange,
    DeletionInsertion,
    average_drop_increase,
    deletion_insertion,
)
from ._localisation import (
    GridCases,
    boxes_to_masks,
    energy_pointing_game,
    grid_pointing_game,
    make_grid_cases,
    pointing_game,
)

__all__ = [
    "ConfidenceChange",
    "DeletionInsertion",
    "GridCases",
    "average_drop_increase",
    "boxes_to_masks",
    "deletion_insertion",
    "energy_pointing_game",
    "grid_pointing_game",
    "make_grid_cases",
    "pointing_game",
]

"""Training a synthetic set's classifier: the multi-label loop, its metrics and
the deterministic settings it runs under."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Protocol

import torch
from torch import Tensor, nn


class FitSchedule(Protocol):
    """What the training loop reads of a training configuration."""

    @property
    def epochs(self) -> int: ...
    @property
    def batch_size(self) -> int: ...
    @property
    def lr(self) -> float: ...
    @property
    def weight_decay(self) -> float: ...
    @property
    def seed(self) -> int: ...


@torch.no_grad()
def multilabel_metrics(logits: Tensor, labels: Tensor) -> dict[str, float]:
    r"""mAP and accuracies of multi-label logits.

    - ``mAP``: mean over classes of the average precision
      :math:`AP_c = \frac{1}{|P_c|} \sum_{k: y_k = 1} \mathrm{precision@}k`
      (samples ranked by decreasing score, ties in index order; the same value
      as scikit-learn's ``average_precision_score`` without ties);
    - ``label_accuracy``: share of (sample, class) decisions
      :math:`[z > 0] = y` that are right;
    - ``exact_match``: share of samples whose whole label set is right.

    Args:
        logits (Tensor): ``(N, K)`` scores.
        labels (Tensor): ``(N, K)`` multi-hot targets.

    Returns:
        dict[str, float]: ``mAP``, ``label_accuracy`` and ``exact_match``.

    Examples::

        >>> m = multilabel_metrics(torch.tensor([[2.0, -1.0], [1.0, 3.0], [-1.0, 0.5]]),
        ...                        torch.tensor([[1, 0], [0, 1], [0, 1]]))
        >>> round(m["mAP"], 4), round(m["label_accuracy"], 4), round(m["exact_match"], 4)
        (1.0, 0.8333, 0.6667)
    """
    if logits.shape != labels.shape or logits.dim() != 2:
        raise ValueError("logits and labels must both be (N, K)")
    truth = labels.bool()
    order = torch.argsort(logits, dim=0, descending=True, stable=True)
    hits = truth.gather(0, order).double()
    precision = hits.cumsum(0) / torch.arange(1, len(hits) + 1, dtype=torch.float64)[:, None]
    positives = hits.sum(0)
    ap = (precision * hits).sum(0) / positives
    decisions = (logits > 0) == truth
    return {
        "mAP": float(ap[positives > 0].mean()),
        "label_accuracy": float(decisions.double().mean()),
        "exact_match": float(decisions.all(dim=1).double().mean()),
    }


@contextlib.contextmanager
def _deterministic(threads: int) -> Iterator[None]:
    """Fixed thread count and deterministic kernels, restored on exit."""
    old_threads = torch.get_num_threads()
    old_deterministic = torch.are_deterministic_algorithms_enabled()
    old_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        with torch.random.fork_rng(devices=[]):
            yield
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_deterministic, warn_only=old_warn)


def _train(
    model: nn.Module,
    inputs: Tensor,
    labels: Tensor,
    config: FitSchedule,
    verbose: bool,
    augment: bool,
) -> None:
    """Multi-label training of ``model``'s parameters that require a gradient.

    ``inputs`` are images, turned and flipped at random when ``augment``, or
    features that a frozen part of the network computed once.
    """
    generator = torch.Generator().manual_seed(config.seed)
    optimiser = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],
        lr=config.lr,
        weight_decay=config.weight_decay,
    )
    steps_per_epoch = math.ceil(len(inputs) / config.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=config.lr, total_steps=config.epochs * steps_per_epoch
    )
    loss_fn = nn.BCEWithLogitsLoss()
    model.train()
    for epoch in range(config.epochs):
        order = torch.randperm(len(inputs), generator=generator)
        total = 0.0
        for start in range(0, len(inputs), config.batch_size):
            index = order[start : start + config.batch_size]
            batch = inputs[index]
            if augment:  # flips and 90-degree turns keep the classes
                flip = torch.rand(len(index), generator=generator) < 0.5
                batch = torch.where(flip[:, None, None, None], batch.flip(-1), batch)
                turns = int(torch.randint(4, (1,), generator=generator))
                batch = torch.rot90(batch, turns, dims=(2, 3))
            loss = loss_fn(model(batch), labels[index])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            total += float(loss.detach()) * len(index)
        if verbose:
            print(f"  epoch {epoch + 1:3d}/{config.epochs}  loss {total / len(inputs):.4f}")
    model.eval()

"""Gradient truncation: the denoiser that makes shallow-layer CAMs usable.

The paper (arXiv 2308.02118) filters the noise of shallow layers "by truncating
the positive gradient"; its exact rule is not public. This module implements
the family reconstructed in docs/method.rst: keep the positive part of
the gradient, compute a threshold per sample (or per sample and channel) and
shrink, drop or cap the positive gradient at that threshold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, cast

import torch
from torch import Tensor

TruncationMode = Literal["soft", "hard", "clip"]
TruncationScope = Literal["sample", "channel"]

_MODES = ("soft", "hard", "clip")
_SCOPES = ("sample", "channel")
_RULES = ("quantile", "fraction", "value")


@dataclass(frozen=True, repr=False)
class GradientTruncation:
    r"""Truncation of the positive gradient, a small immutable value object.

    With :math:`P = \max(G, 0)` the positive part of the layer gradient and
    :math:`\tau` a threshold computed for each sample (``scope="sample"``, over
    all :math:`K \times H \times W` entries of the sample) or for each sample and
    channel (``scope="channel"``):

    .. math::

        T_{soft}(G) = \max(P - \tau, 0), \quad
        T_{hard}(G) = P \cdot [P > \tau], \quad
        T_{clip}(G) = \min(P, \tau).

    The threshold is set by exactly one rule:

    - ``quantile=q``: :math:`\tau = v_{(\lfloor q n \rfloor)}`, where
      :math:`v_{(1)} \le \dots \le v_{(n)}` are the :math:`n` strictly positive
      entries of :math:`P` and :math:`v_{(0)} = 0`. In words: a share ``q`` of
      the positive entries lies at or below :math:`\tau`, so ``hard`` drops
      exactly the ``q`` smallest share, ``quantile=0`` leaves ``soft`` and
      ``hard`` as the identity on :math:`P`, and ``quantile=1`` leaves ``clip``
      as the identity.
    - ``fraction=a``: :math:`\tau = a \cdot \max P`.
    - ``value=t``: :math:`\tau = t`.

    A sample (or channel) with no positive entry gives zeros. Thresholds never
    mix samples, so a batch gives exactly what each sample gives alone. The
    quantile is found by selection (:func:`torch.kthvalue` per row for a few
    rows, :func:`torch.topk` over the smaller tail for many), with no size cap
    (unlike :func:`torch.quantile`) and no full sort.

    This rule family is a reconstruction: the paper's abstract names only
    "truncating the positive gradient".

    Args:
        mode (str, optional): ``"soft"`` (shrinkage), ``"hard"`` (drop the
            small positive gradients) or ``"clip"`` (cap the large ones).
            Default: ``"soft"``
        quantile (float, optional): Share in [0, 1] of the positive entries at
            or below the threshold.
            Default: None
        fraction (float, optional): Threshold as a fraction in [0, 1] of the
            largest positive entry.
            Default: None
        value (float, optional): Fixed non-negative threshold.
            Default: None
        scope (str, optional): ``"sample"`` or ``"channel"``.
            Default: ``"sample"``

    Examples::

        >>> import torch
        >>> from captum_shallow import GradientTruncation
        >>> trunc = GradientTruncation("hard", quantile=0.5)
        >>> trunc
        GradientTruncation(mode='hard', quantile=0.5, scope='sample')
        >>> trunc(torch.tensor([[-1.0, 1.0, 2.0, 3.0, 4.0]]))
        tensor([[0., 0., 0., 3., 4.]])
        >>> GradientTruncation.parse("soft:fraction=0.25,scope=channel")
        GradientTruncation(mode='soft', fraction=0.25, scope='channel')
    """

    mode: TruncationMode = "soft"
    quantile: float | None = None
    fraction: float | None = None
    value: float | None = None
    scope: TruncationScope = "sample"

    def __post_init__(self) -> None:
        if self.mode not in _MODES:
            raise ValueError(f"GradientTruncation: mode must be one of {_MODES}, got {self.mode!r}")
        if self.scope not in _SCOPES:
            raise ValueError(
                f"GradientTruncation: scope must be one of {_SCOPES}, got {self.scope!r}"
            )
        given = [name for name in _RULES if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(
                "GradientTruncation: give exactly one threshold rule of "
                f"quantile=, fraction= or value=; got {given or 'none'}"
            )
        name = given[0]
        number = getattr(self, name)
        if isinstance(number, bool) or not isinstance(number, (int, float)):
            raise TypeError(
                f"GradientTruncation: {name} must be a number, got {type(number).__name__}"
            )
        if not math.isfinite(number):
            raise ValueError(f"GradientTruncation: {name} must be finite, got {number}")
        if name in ("quantile", "fraction") and not 0.0 <= number <= 1.0:
            raise ValueError(f"GradientTruncation: {name} must lie in [0, 1], got {number}")
        if name == "value" and number < 0:
            raise ValueError(f"GradientTruncation: value must be >= 0, got {number}")
        object.__setattr__(self, name, float(number))

    @property
    def rule(self) -> str:
        """Name of the threshold rule: ``"quantile"``, ``"fraction"`` or ``"value"``."""
        return next(name for name in _RULES if getattr(self, name) is not None)

    @property
    def threshold_parameter(self) -> float:
        """The number that the threshold rule takes (``q``, ``a`` or ``t``)."""
        return cast(float, getattr(self, self.rule))

    def __repr__(self) -> str:
        return (
            f"GradientTruncation(mode={self.mode!r}, {self.rule}={self.threshold_parameter!r}, "
            f"scope={self.scope!r})"
        )

    def __str__(self) -> str:
        """The spec string that :meth:`parse` reads back, e.g. ``soft:quantile=0.99``."""
        spec = f"{self.mode}:{self.rule}={self.threshold_parameter:g}"
        return spec if self.scope == "sample" else f"{spec},scope={self.scope}"

    @classmethod
    def parse(cls, spec: str) -> GradientTruncation | None:
        """Build a truncation from a spec string such as ``"soft:quantile=0.99"``.

        The form is ``MODE:RULE=NUMBER[,scope=SCOPE]``; ``"none"`` gives None.

        Args:
            spec (str): The spec, as written on a command line.

        Returns:
            *GradientTruncation* or *None*: the truncation, or None for ``"none"``.

        Examples::

            >>> GradientTruncation.parse("hard:quantile=0.9,scope=channel")
            GradientTruncation(mode='hard', quantile=0.9, scope='channel')
            >>> GradientTruncation.parse("none") is None
            True
        """
        text = spec.strip()
        if text.lower() in ("none", "off"):
            return None
        mode, sep, rest = text.partition(":")
        if not sep or not rest:
            raise ValueError(
                f"invalid truncation spec {spec!r}: expected MODE:RULE=NUMBER, "
                "e.g. 'soft:quantile=0.99', or 'none'"
            )
        kwargs: dict[str, object] = {}
        for item in rest.split(","):
            key, eq, raw = item.partition("=")
            key = key.strip()
            if not eq or key not in (*_RULES, "scope"):
                raise ValueError(
                    f"invalid truncation spec {spec!r}: {item.strip()!r} is not "
                    "quantile=, fraction=, value= or scope="
                )
            if key == "scope":
                kwargs[key] = raw.strip()
                continue
            try:
                kwargs[key] = float(raw)
            except ValueError:
                raise ValueError(
                    f"invalid truncation spec {spec!r}: {key} needs a number, got {raw!r}"
                ) from None
        return cls(mode=cast(TruncationMode, mode.strip()), **kwargs)  # type: ignore[arg-type]

    def threshold(self, positive: Tensor) -> Tensor:
        """Threshold :math:`\\tau` for each row of ``positive`` (rows x entries).

        Args:
            positive (Tensor): Non-negative values, shape ``(R, M)``.

        Returns:
            *Tensor*: shape ``(R, 1)``, same dtype as ``positive``.

        Examples::

            >>> GradientTruncation("soft", fraction=0.5).threshold(
            ...     torch.tensor([[1.0, 4.0], [0.0, 2.0]]))
            tensor([[2.],
                    [1.]])
        """
        if self.value is not None:
            return positive.new_full((positive.shape[0], 1), self.value)
        if self.fraction is not None:
            return positive.amax(dim=1, keepdim=True) * self.fraction
        return _positive_quantile(positive, cast(float, self.quantile))

    def __call__(self, gradient: Tensor) -> Tensor:
        """Truncate ``gradient`` of shape ``(N, ...)``; returns a tensor of that shape.

        ``scope="channel"`` needs at least two dimensions ``(N, K, ...)``.

        Args:
            gradient (Tensor): The layer gradient, floating point and finite;
                dimension 0 is the batch.

        Returns:
            *Tensor*: :math:`T(G)`, non-negative, of ``gradient``'s shape.

        Examples::

            >>> per_channel = GradientTruncation("hard", quantile=0.5, scope="channel")
            >>> per_channel(torch.tensor([[[1.0, 2.0], [30.0, 40.0]]]))
            tensor([[[ 0.,  2.],
                     [ 0., 40.]]])
        """
        if not isinstance(gradient, Tensor):
            raise TypeError(f"GradientTruncation expects a Tensor, got {type(gradient).__name__}")
        if not gradient.is_floating_point():
            raise TypeError(f"GradientTruncation expects a floating tensor, got {gradient.dtype}")
        if gradient.dim() < (2 if self.scope == "channel" else 1):
            raise ValueError(
                f"GradientTruncation(scope={self.scope!r}) needs a batched gradient, "
                f"got shape {tuple(gradient.shape)}"
            )
        if not bool(torch.isfinite(gradient).all()):
            raise ValueError(
                "the layer gradient contains NaN or inf; the model's output or the "
                "target is not finite, so no truncation threshold can be computed"
            )
        rows = gradient.shape[0] * (gradient.shape[1] if self.scope == "channel" else 1)
        positive = gradient.clamp(min=0)
        if gradient.numel() == 0:
            return positive
        flat = positive.reshape(rows, -1)
        tau = self.threshold(flat)
        if self.mode == "soft":
            out = (flat - tau).clamp_(min=0)
        elif self.mode == "hard":
            out = flat * (flat > tau)
        else:
            out = torch.minimum(flat, tau)
        return out.reshape(gradient.shape)


#: Up to this many rows (samples, or samples x channels), each row's quantile is one
#: ``kthvalue`` (linear-time selection); above it one batched ``topk`` avoids the
#: per-row Python loop. Both give the same value.
_SELECT_ROWS = 64


def _positive_quantile(positive: Tensor, q: float) -> Tensor:
    """``v_(floor(q n))`` of each row's strictly positive entries (0 when that index is 0).

    ``positive`` is non-negative, so in a row's ascending order its ``m - n`` zeros
    come first and the ``k``-th positive is the row's ``(m - n + k)``-th value: few
    rows take one ``kthvalue`` each. Many rows select only the needed tail with
    ``topk``: the ``k`` smallest positives when ``q <= 0.5``, else the ``n - k + 1``
    largest; rows differ in ``n``, so one ``topk`` takes the widest tail and a
    ``gather`` picks each row's entry.
    """
    count = (positive > 0).sum(dim=1, keepdim=True)  # n per row
    k = torch.floor(count.to(torch.float64) * q).to(torch.long)  # rank of tau, 1-based
    k = torch.minimum(k, count)
    rows, width_all = positive.shape
    if rows <= _SELECT_ROWS:
        ranks = k[:, 0].tolist()
        places = (width_all - count[:, 0] + k[:, 0]).tolist()
        zero = positive.new_zeros(())
        values = [
            positive[r].kthvalue(place).values if rank > 0 else zero
            for r, (rank, place) in enumerate(zip(ranks, places))
        ]
        return torch.stack(values)[:, None] if values else positive.new_zeros((0, 1))
    if q <= 0.5:
        width = int(k.max())
        if width == 0:
            return positive.new_zeros((positive.shape[0], 1))
        candidates = torch.where(positive > 0, positive, positive.new_tensor(float("inf")))
        smallest = candidates.topk(width, dim=1, largest=False, sorted=True).values
        picked = smallest.gather(1, (k - 1).clamp(min=0))
    else:
        width = int((count - k + 1).clamp(max=count).max())
        if width == 0:
            return positive.new_zeros((positive.shape[0], 1))
        width = min(width, positive.shape[1])
        largest = positive.topk(width, dim=1, sorted=True).values
        picked = largest.gather(1, (count - k).clamp(min=0, max=width - 1))
    return torch.where(k > 0, picked, torch.zeros_like(picked))

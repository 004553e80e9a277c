"""GradientTruncation: definition, properties, validation and numerics."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from captum_shallow import GradientTruncation
from captum_shallow.attribution import _truncation

MODES = ("soft", "hard", "clip")
SCOPES = ("sample", "channel")

gradients = arrays(
    np.float64,
    st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 5), st.integers(1, 5)),
    elements=st.floats(-4, 4, allow_nan=False, width=32),
)
rules = st.one_of(
    st.builds(lambda q: {"quantile": q}, st.floats(0, 1)),
    st.builds(lambda a: {"fraction": a}, st.floats(0, 1)),
    st.builds(lambda t: {"value": t}, st.floats(0, 4)),
)


def reference_quantile(positive: np.ndarray, q: float) -> float:
    """v_(floor(q n)) of the strictly positive entries, 0 when that rank is 0."""
    values = np.sort(positive[positive > 0])
    rank = int(np.floor(q * values.size))
    return 0.0 if rank == 0 else float(values[rank - 1])


def test_hard_quantile_half_drops_the_smaller_half() -> None:
    trunc = GradientTruncation("hard", quantile=0.5)
    out = trunc(torch.tensor([[-1.0, 1.0, 2.0, 3.0, 4.0]]))
    assert out.tolist() == [[0.0, 0.0, 0.0, 3.0, 4.0]]


def test_soft_fraction_shrinks_by_a_share_of_the_max() -> None:
    trunc = GradientTruncation("soft", fraction=0.25)
    out = trunc(torch.tensor([[-2.0, 0.5, 1.0, 4.0]]))
    assert out.tolist() == [[0.0, 0.0, 0.0, 3.0]]


def test_clip_value_caps_large_gradients() -> None:
    trunc = GradientTruncation("clip", value=1.5)
    out = trunc(torch.tensor([[-2.0, 0.5, 1.0, 4.0]]))
    assert out.tolist() == [[0.0, 0.5, 1.0, 1.5]]


def test_channel_scope_thresholds_each_channel_alone() -> None:
    grad = torch.tensor([[[1.0, 2.0], [10.0, 20.0]]])  # (N=1, K=2, 2)
    out = GradientTruncation("hard", fraction=0.6, scope="channel")(grad)
    assert out.tolist() == [[[0.0, 2.0], [0.0, 20.0]]]
    out = GradientTruncation("hard", fraction=0.6, scope="sample")(grad)
    assert out.tolist() == [[[0.0, 0.0], [0.0, 20.0]]]


@pytest.mark.parametrize("select_rows", [64, 0], ids=["kthvalue", "topk"])
@pytest.mark.parametrize("q", [0.0, 0.1, 0.37, 0.5, 0.51, 0.9, 0.99, 1.0])
def test_quantile_threshold_matches_the_reference_definition(
    q: float, select_rows: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Few rows take one kthvalue each, many rows one batched topk: both paths.
    monkeypatch.setattr(_truncation, "_SELECT_ROWS", select_rows)
    generator = torch.Generator().manual_seed(1)
    grad = torch.randn(4, 3, 7, 5, generator=generator, dtype=torch.float64)
    grad[1] = -grad[1].abs()  # a sample without positive entries
    trunc = GradientTruncation("hard", quantile=q)
    tau = trunc.threshold(grad.clamp(min=0).reshape(4, -1))
    expected = [reference_quantile(sample.numpy(), q) for sample in grad]
    assert tau.squeeze(1).tolist() == pytest.approx(expected, abs=0)


@settings(max_examples=80, deadline=None)
@given(gradients, st.floats(0, 1), st.sampled_from(SCOPES))
def test_hard_quantile_keeps_exactly_the_largest_share(
    array: np.ndarray, q: float, scope: str
) -> None:
    grad = torch.from_numpy(array)
    out = GradientTruncation("hard", quantile=q, scope=scope)(grad)  # type: ignore[arg-type]
    rows = grad.reshape(grad.shape[0] * (grad.shape[1] if scope == "channel" else 1), -1)
    kept = out.reshape(rows.shape)
    for row, kept_row in zip(rows, kept):
        positive = row[row > 0]
        tau = reference_quantile(row.numpy(), q)
        assert torch.equal(kept_row, torch.where(row > tau, row, 0.0).clamp(min=0))
        if positive.unique().numel() == positive.numel():
            assert int((kept_row > 0).sum()) == positive.numel() - int(
                np.floor(q * positive.numel())
            )


@settings(max_examples=80, deadline=None)
@given(gradients, rules, st.sampled_from(SCOPES))
def test_soft_below_hard_below_positive_part(array: np.ndarray, rule: dict, scope: str) -> None:
    grad = torch.from_numpy(array)
    soft = GradientTruncation("soft", scope=scope, **rule)(grad)  # type: ignore[arg-type]
    hard = GradientTruncation("hard", scope=scope, **rule)(grad)  # type: ignore[arg-type]
    positive = grad.clamp(min=0)
    assert bool((soft >= 0).all())
    assert bool((soft <= hard).all())
    assert bool((hard <= positive).all())


@settings(max_examples=80, deadline=None)
@given(gradients, rules, st.sampled_from(SCOPES))
def test_clip_never_exceeds_its_threshold(array: np.ndarray, rule: dict, scope: str) -> None:
    grad = torch.from_numpy(array)
    trunc = GradientTruncation("clip", scope=scope, **rule)  # type: ignore[arg-type]
    rows = grad.shape[0] * (grad.shape[1] if scope == "channel" else 1)
    tau = trunc.threshold(grad.clamp(min=0).reshape(rows, -1))
    clipped = trunc(grad).reshape(rows, -1)
    assert bool((clipped <= tau).all())
    assert bool((clipped >= 0).all())


@settings(max_examples=60, deadline=None)
@given(gradients, st.sampled_from(SCOPES))
def test_extreme_quantiles_are_identities(array: np.ndarray, scope: str) -> None:
    grad = torch.from_numpy(array)
    positive = grad.clamp(min=0)
    for mode in ("soft", "hard"):
        out = GradientTruncation(mode, quantile=0.0, scope=scope)(grad)  # type: ignore[arg-type]
        assert torch.equal(out, positive)
    out = GradientTruncation("clip", quantile=1.0, scope=scope)(grad)  # type: ignore[arg-type]
    assert torch.equal(out, positive)


@settings(max_examples=60, deadline=None)
@given(gradients, rules, st.sampled_from(MODES), st.sampled_from(SCOPES))
def test_batch_gives_what_each_sample_gives_alone(
    array: np.ndarray, rule: dict, mode: str, scope: str
) -> None:
    grad = torch.from_numpy(array)
    trunc = GradientTruncation(mode, scope=scope, **rule)  # type: ignore[arg-type]
    batched = trunc(grad)
    for index in range(grad.shape[0]):
        assert torch.equal(batched[index : index + 1], trunc(grad[index : index + 1]))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("scope", SCOPES)
def test_rows_without_positive_gradient_give_zeros(mode: str, scope: str) -> None:
    grad = torch.zeros(2, 3, 4, 4)
    grad[1] = -1.0
    for rule in ({"quantile": 0.9}, {"fraction": 0.5}, {"value": 0.1}):
        out = GradientTruncation(mode, scope=scope, **rule)(grad)  # type: ignore[arg-type]
        assert not bool(out.isnan().any())
        assert bool((out == 0).all())


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_gradient_raises_a_clear_error(bad: float) -> None:
    grad = torch.ones(2, 3)
    grad[1, 2] = bad
    with pytest.raises(ValueError, match="NaN or inf"):
        GradientTruncation("soft", quantile=0.5)(grad)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("mode", MODES)
def test_low_precision_matches_float64(dtype: torch.dtype, mode: str) -> None:
    generator = torch.Generator().manual_seed(3)
    grad64 = torch.randn(3, 8, 6, 6, generator=generator, dtype=torch.float64)
    grad = grad64.to(dtype)
    trunc = GradientTruncation(mode, quantile=0.8)  # type: ignore[arg-type]
    out = trunc(grad)
    assert out.dtype == dtype
    expected = trunc(grad.to(torch.float64))  # same inputs, exact arithmetic
    torch.testing.assert_close(out.to(torch.float64), expected, rtol=1e-2, atol=1e-2)


@pytest.mark.slow
def test_inputs_beyond_torch_quantile_size_cap() -> None:
    # torch.quantile refuses inputs of more than 2**24 entries; a shallow VGG-16
    # layer at batch 8 (64 x 224 x 224 x 8 = 25.7M) is larger.
    grad = torch.linspace(-1.0, 1.0, 2 * 8_500_000).reshape(2, 8_500_000)
    out = GradientTruncation("hard", quantile=0.99)(grad)
    positive = grad[0][grad[0] > 0]
    kept = int((out[0] > 0).sum())
    assert kept == positive.numel() - int(np.floor(0.99 * positive.numel()))


def test_is_a_frozen_comparable_value() -> None:
    trunc = GradientTruncation("soft", quantile=0.99)
    assert trunc == GradientTruncation(mode="soft", quantile=0.99, scope="sample")
    assert hash(trunc) == hash(GradientTruncation("soft", quantile=0.99))
    assert repr(trunc) == "GradientTruncation(mode='soft', quantile=0.99, scope='sample')"
    assert str(trunc) == "soft:quantile=0.99"
    assert trunc.rule == "quantile"
    assert trunc.threshold_parameter == 0.99
    with pytest.raises(dataclasses.FrozenInstanceError):
        trunc.quantile = 0.5  # type: ignore[misc]


@pytest.mark.parametrize(
    "spec",
    [
        "soft:quantile=0.99",
        "hard:fraction=0.5",
        "clip:value=0.001",
        "soft:quantile=0.9,scope=channel",
    ],
)
def test_spec_strings_round_trip(spec: str) -> None:
    trunc = GradientTruncation.parse(spec)
    assert str(trunc) == spec
    assert GradientTruncation.parse(str(trunc)) == trunc


def test_none_spec_turns_the_denoiser_off() -> None:
    assert GradientTruncation.parse("none") is None


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"mode": "median", "quantile": 0.5}, ValueError, "mode must be one of"),
        ({"mode": "soft"}, ValueError, "exactly one threshold rule"),
        ({"mode": "soft", "quantile": 0.5, "value": 1.0}, ValueError, "exactly one threshold rule"),
        ({"mode": "soft", "quantile": 1.5}, ValueError, r"quantile must lie in \[0, 1\]"),
        ({"mode": "soft", "fraction": -0.1}, ValueError, r"fraction must lie in \[0, 1\]"),
        ({"mode": "soft", "value": -1.0}, ValueError, "value must be >= 0"),
        ({"mode": "soft", "value": float("nan")}, ValueError, "must be finite"),
        ({"mode": "soft", "quantile": True}, TypeError, "must be a number"),
        ({"mode": "soft", "quantile": "0.5"}, TypeError, "must be a number"),
        ({"mode": "soft", "quantile": 0.5, "scope": "pixel"}, ValueError, "scope must be one of"),
    ],
)
def test_invalid_parameters_are_refused_at_construction(
    kwargs: dict, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        GradientTruncation(**kwargs)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("soft", "expected MODE:RULE=NUMBER"),
        ("soft:q=0.9", "is not quantile=, fraction=, value= or scope="),
        ("soft:quantile=high", "quantile needs a number"),
        ("blur:quantile=0.9", "mode must be one of"),
    ],
)
def test_invalid_specs_are_refused(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GradientTruncation.parse(spec)


def test_non_tensor_and_integer_gradients_are_refused() -> None:
    trunc = GradientTruncation("soft", quantile=0.5)
    with pytest.raises(TypeError, match="expects a Tensor"):
        trunc([1.0, 2.0])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="floating tensor"):
        trunc(torch.ones(2, 2, dtype=torch.long))

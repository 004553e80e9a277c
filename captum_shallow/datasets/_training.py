"""A synthetic set's classifier, from the on-disk cache or trained now."""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..io._atomic import atomic_write
from ._composite import CompositeClassifier, CompositeConfig, FineTuneConfig
from ._fitting import _deterministic, multilabel_metrics
from ._scenes import make_synthetic_split
from ._shapes import SyntheticClassifier, SyntheticConfig, TrainConfig

__all__ = ["TrainedClassifier", "default_cache_dir", "load_or_train_classifier"]


@dataclass(frozen=True)
class TrainedClassifier:
    """A trained synthetic classifier with its test metrics.

    Attributes:
        model (SyntheticClassifier or CompositeClassifier): in eval mode, on the CPU.
        metrics (dict[str, float]): test ``mAP``, ``label_accuracy``,
            ``exact_match``, and ``train_seconds`` (of the run that made the
            cache entry).
        path (Path): the cache file.
        cached (bool): True when loaded from the cache without training.
        config (SyntheticConfig or CompositeConfig): the data configuration.
        train_config (TrainConfig or FineTuneConfig): the training configuration.

    :func:`load_or_train_classifier` returns one; its example shows it in use.
    """

    model: SyntheticClassifier | CompositeClassifier
    metrics: dict[str, float]
    path: Path
    cached: bool
    config: SyntheticConfig | CompositeConfig = field(default_factory=SyntheticConfig)
    train_config: TrainConfig | FineTuneConfig = field(default_factory=TrainConfig)


def _cache_key(
    config: SyntheticConfig | CompositeConfig, train_config: TrainConfig | FineTuneConfig
) -> str:
    blob = json.dumps(
        {"version": config._version, "data": asdict(config), "train": asdict(train_config)},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def default_cache_dir() -> Path:
    """``$CAPTUM_SHALLOW_CACHE`` or ``~/.cache/captum_shallow``.

    Returns:
        Path: The folder under which :func:`load_or_train_classifier` caches.

    Examples::

        >>> folder = default_cache_dir()   # nothing is created until a classifier is cached
        >>> isinstance(folder, Path)
        True
    """
    return Path(os.environ.get("CAPTUM_SHALLOW_CACHE", Path.home() / ".cache" / "captum_shallow"))


def load_or_train_classifier(
    config: SyntheticConfig | CompositeConfig | None = None,
    train_config: TrainConfig | FineTuneConfig | None = None,
    *,
    cache_dir: str | Path | None = None,
    retrain: bool = False,
    verbose: bool = False,
) -> TrainedClassifier:
    r"""A synthetic benchmark's classifier: from the cache, or trained now.

    The set follows the configurations: :class:`SyntheticConfig` with
    :class:`TrainConfig` trains the shapes set's :class:`SyntheticClassifier`
    from scratch; :class:`CompositeConfig` with :class:`FineTuneConfig`
    fine-tunes the composite set's :class:`CompositeClassifier`. The cache file
    is ``<cache_dir>/<set>/classifier-<key>.pt`` (``<set>`` is ``synthetic`` or
    ``composite``) where the key hashes both configurations and the code
    version. Training is seeded and runs with
    ``torch.use_deterministic_algorithms`` and a fixed thread count (both
    restored afterwards; the global RNG state is untouched); the test split is
    then scored with :func:`multilabel_metrics`.

    Args:
        config (SyntheticConfig or CompositeConfig, optional): data.
            Default: ``SyntheticConfig()``.
        train_config (TrainConfig or FineTuneConfig, optional): training; it
            must fit the data's set. Default: ``TrainConfig()`` for the shapes
            set, ``FineTuneConfig()`` for the composite set.
        cache_dir (str or Path, optional): Default: ``$CAPTUM_SHALLOW_CACHE`` or
            ``~/.cache/captum_shallow``.
        retrain (bool, optional): ignore an existing cache entry. Default: False.
        verbose (bool, optional): print the loss per epoch. Default: False.

    Returns:
        TrainedClassifier: model (eval mode, CPU), test metrics, cache path.

    Raises:
        TypeError: when ``train_config`` does not fit the set of ``config``.

    Examples::

        >>> import tempfile
        >>> tiny = SyntheticConfig(image_size=32, num_train=64, num_test=32,
        ...                        min_object_size=8, max_object_size=14)
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     first = load_or_train_classifier(tiny, TrainConfig(width=4, epochs=1),
        ...                                      cache_dir=folder)
        ...     again = load_or_train_classifier(tiny, TrainConfig(width=4, epochs=1),
        ...                                      cache_dir=folder)
        >>> first.cached, again.cached, again.metrics == first.metrics
        (False, True, True)
    """
    config = SyntheticConfig() if config is None else config
    train_config = config._default_training() if train_config is None else train_config
    if not isinstance(config, getattr(train_config, "_data", ())):
        raise TypeError(
            f"{type(config).__name__} and {type(train_config).__name__} do not go together: "
            "SyntheticConfig takes a TrainConfig, CompositeConfig a FineTuneConfig"
        )
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key = _cache_key(config, train_config)
    path = folder / config._cache_folder / f"classifier-{key}.pt"
    num_classes = len(config.classes)
    if path.exists() and not retrain:
        with torch.random.fork_rng(devices=[]):  # construction draws initial weights
            model = train_config._build(num_classes, pretrained=False)
        saved = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(saved["state_dict"])
        return TrainedClassifier(
            model.eval(), dict(saved["metrics"]), path, True, config, train_config
        )
    with _deterministic(train_config.threads):
        torch.manual_seed(train_config.seed)
        model = train_config._build(num_classes, pretrained=True)
        train = make_synthetic_split(config, "train")
        start = time.perf_counter()
        train_config._fit(model, train, verbose)
        seconds = time.perf_counter() - start
        model.eval()
        test = make_synthetic_split(config, "test")
        with torch.no_grad():
            logits = torch.cat([model(x) for x, _, _ in test.batches(256)])
    metrics = multilabel_metrics(logits, test.labels)
    metrics["train_seconds"] = seconds
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as stream:  # a concurrent reader never sees half a file
        torch.save({"state_dict": model.state_dict(), "metrics": metrics}, stream)
    return TrainedClassifier(model, metrics, path, False, config, train_config)

"""Claims over seeds: "A beats B" only when the gap is larger than the noise between training runs.

A lesson's claim compares models trained with several seeds (the course checkpoints). It holds when

- the mean gap is at least ``MARGIN_STDS`` (3) times the pooled standard deviation of the two models'
  results over seeds, and at least ``min_gap`` (a size worth teaching, fixed in the notebook before
  looking at the numbers), and
- the better model wins for every seed, paired by seed (the same data order and test scenes).

    >>> c = compare("FCN-8s", [0.41, 0.42, 0.40], "FCN-32s", [0.20, 0.22, 0.21], "miou", min_gap=0.01)
    >>> c.holds
    True

Two settings of *one* model (iteration 3 against iteration 1 of the same trained network, seed by seed)
are not independent runs: what varies between seeds is mostly the model, shared by both settings.
:func:`compare_paired` judges them by the per-seed differences instead: every difference at least
``min_gap``, and their mean at least ``MARGIN_STDS`` times their standard deviation.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

MARGIN_STDS = 3.0


def mean_std(values) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; 0 for one value) of a list of numbers."""
    v = [float(x) for x in values]
    if not v:
        raise ValueError("mean_std: no values")
    m = sum(v) / len(v)
    s = math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else 0.0
    return m, s


def pooled_std(a, b) -> float:
    """sqrt((s_a^2 + s_b^2) / 2): the typical seed-to-seed spread of the two models."""
    return math.sqrt((mean_std(a)[1] ** 2 + mean_std(b)[1] ** 2) / 2)


def fmt(values, digits: int = 3) -> str:
    """``mean ± std`` of a list of numbers."""
    m, s = mean_std(values)
    return f"{m:.{digits}f} ± {s:.{digits}f}"


@dataclass(frozen=True)
class Comparison:
    """The outcome of :func:`compare`; ``str()`` gives one readable line."""

    better: str
    worse: str
    metric: str
    gap: float                  # mean(better) - mean(worse)
    pooled_std: float
    margin: float               # what the gap had to reach: max(min_gap, MARGIN_STDS * pooled_std)
    paired_gaps: tuple          # better - worse, seed by seed
    holds: bool
    paired: bool = False        # judged by compare_paired: pooled_std is then the std of the paired gaps

    def __str__(self) -> str:
        verdict = "holds" if self.holds else "does NOT hold"
        seeds = ", ".join(f"{g:+.3f}" for g in self.paired_gaps)
        spread = "std of the per-seed gaps" if self.paired else "pooled std"
        return (f"{self.better} > {self.worse} in {self.metric}: gap {self.gap:+.3f} vs required {self.margin:.3f} "
                f"(3 x {spread} {self.pooled_std:.3f}); per seed {seeds} -> {verdict}")


def compare(better: str, better_values, worse: str, worse_values, metric: str, min_gap: float = 0.0) -> Comparison:
    """Does ``better`` beat ``worse`` in ``metric`` beyond the seed noise? See the module docstring.

    The value lists hold one number per seed, in the same seed order. Raises ValueError for fewer than 3
    seeds or lists of different lengths.
    """
    a, b = [float(x) for x in better_values], [float(x) for x in worse_values]
    if len(a) != len(b) or len(a) < 3:
        raise ValueError(f"compare {better} vs {worse}: need the same seeds, at least 3, got {len(a)} and {len(b)}")
    gap = mean_std(a)[0] - mean_std(b)[0]
    spread = pooled_std(a, b)
    margin = max(min_gap, MARGIN_STDS * spread)
    paired = tuple(x - y for x, y in zip(a, b))
    return Comparison(better, worse, metric, gap, spread, margin, paired,
                      holds=gap >= margin and all(g > 0 for g in paired))


def compare_paired(better: str, better_values, worse: str, worse_values, metric: str,
                   min_gap: float = 0.0) -> Comparison:
    """Does ``better`` beat ``worse`` seed by seed, when both are settings of the same model per seed?

    Holds when every per-seed gap is at least ``min_gap`` and the mean gap is at least ``MARGIN_STDS`` times
    the standard deviation of the per-seed gaps. Raises ValueError for fewer than 3 seeds or lists of
    different lengths.
    """
    a, b = [float(x) for x in better_values], [float(x) for x in worse_values]
    if len(a) != len(b) or len(a) < 3:
        raise ValueError(f"compare {better} vs {worse}: need the same seeds, at least 3, got {len(a)} and {len(b)}")
    paired = tuple(x - y for x, y in zip(a, b))
    gap, spread = mean_std(paired)
    margin = max(min_gap, MARGIN_STDS * spread)
    return Comparison(better, worse, metric, gap, spread, margin, paired,
                      holds=gap >= margin and all(g >= min_gap for g in paired), paired=True)

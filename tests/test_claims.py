"""Claims over seeds: the unpaired and the paired rule, on numbers whose verdict is known by hand."""
import pytest

from lecturelib import claims


def test_mean_std_and_pooled_std():
    assert claims.mean_std([1.0, 2.0, 3.0]) == pytest.approx((2.0, 1.0))
    assert claims.pooled_std([1.0, 2.0, 3.0], [5.0, 5.0, 5.0]) == pytest.approx(0.5 ** 0.5)
    assert claims.fmt([0.1, 0.2, 0.3]) == "0.200 ± 0.100"


def test_compare_needs_every_seed_and_three_pooled_stds():
    assert claims.compare("A", [0.41, 0.42, 0.40], "B", [0.20, 0.22, 0.21], "miou", 0.01).holds
    # mean gap 0.02 but the spread between seeds is 0.01: 3 x pooled std = 0.03 is not reached
    c = claims.compare("A", [0.40, 0.41, 0.42], "B", [0.38, 0.39, 0.40], "miou", 0.01)
    assert not c.holds and c.margin == pytest.approx(0.03)
    # one seed loses: never a claim, whatever the mean
    assert not claims.compare("A", [0.9, 0.9, 0.1], "B", [0.2, 0.2, 0.2], "miou").holds
    assert "does NOT hold" in str(c) and "pooled std" in str(c)


def test_compare_paired_judges_the_per_seed_gaps():
    it3, it1 = [0.342, 0.332, 0.323], [0.311, 0.314, 0.300]
    assert not claims.compare("it 3", it3, "it 1", it1, "miou", 0.01).holds     # seeds differ as much as the gain
    c = claims.compare_paired("it 3", it3, "it 1", it1, "miou", 0.01)
    assert c.holds and c.paired and c.gap == pytest.approx(0.024)
    assert "per-seed gaps" in str(c)
    assert not claims.compare_paired("A", [0.35, 0.33, 0.305], "B", it1, "miou", 0.01).holds  # one gap 0.005 < min_gap
    assert not claims.compare_paired("A", [0.40, 0.32, 0.31], "B", it1, "miou", 0.0).holds    # gaps too uneven


@pytest.mark.parametrize("rule", [claims.compare, claims.compare_paired])
def test_fewer_than_three_seeds_is_refused(rule):
    with pytest.raises(ValueError, match="at least 3"):
        rule("A", [0.5, 0.6], "B", [0.1, 0.2], "miou")
    with pytest.raises(ValueError, match="same seeds"):
        rule("A", [0.5, 0.6, 0.7], "B", [0.1, 0.2], "miou")

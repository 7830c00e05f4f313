"""The self-checks' common tools: messages that say what is wrong, and refusing the course's own answer."""
import functools

import pytest
import torch

import lecturelib
from lecturelib.checks import CheckFailed, expect_close, expect_equal, refuse_reference, run_check
from lecturelib.fully_conv import receptive_field_of


def message(fn) -> str:
    with pytest.raises(CheckFailed) as info:
        fn()
    return str(info.value)


def test_expect_close_names_the_worst_position_and_both_values():
    got, want = torch.tensor([[1.0, 2.0], [3.0, 4.5]]), torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert message(lambda: expect_close(got, want, "scores")) == (
        "scores: wrong value at [1, 1]: got 4.5, expected 4 (1 of 4 values wrong).")
    assert message(lambda: expect_close(got, want[0], "scores")) == "scores: shape (2, 2), expected (2,)."
    assert message(lambda: expect_close(3.0, 2.0, "x")) == "x: wrong value: got 3, expected 2 (1 of 1 values wrong)."
    expect_close(got, got + 1e-7)
    assert message(lambda: expect_equal((3, 4), (3, 5), "output size")) == "output size: got (3, 4), expected (3, 5)."


def test_refuse_reference_catches_the_course_function_aliases_wrappers_and_nested_calls():
    rf = receptive_field_of

    def by_alias(layers):
        return rf(layers)

    def nested(layers):
        def inner():
            return receptive_field_of(layers)
        return inner()

    def own(layers):
        size, jump = 1, 1
        for kernel, stride in layers:
            size, jump = size + (kernel - 1) * jump, jump * stride
        return size, jump

    for cheat in (receptive_field_of, functools.partial(receptive_field_of), by_alias, nested,
                  functools.wraps(receptive_field_of)(lambda layers: receptive_field_of(layers))):
        with pytest.raises(CheckFailed, match="course's own lecturelib.fully_conv.receptive_field_of"):
            refuse_reference(cheat, receptive_field_of)
    refuse_reference(own, receptive_field_of)
    assert "expected a function" in message(lambda: refuse_reference(3, receptive_field_of))


def test_a_check_reports_the_cheat_and_never_touches_the_global_rng(capsys):
    torch.manual_seed(5)
    before = torch.random.get_rng_state()

    def test():
        torch.manual_seed(0)
        refuse_reference(receptive_field_of, receptive_field_of)

    assert run_check("receptive field", test, "Hint: grow the field layer by layer.") is False
    assert torch.equal(torch.random.get_rng_state(), before)
    assert "write your own. Hint: grow the field" in capsys.readouterr().out


def test_show_signature_prints_the_signature_and_summary_but_not_the_code(capsys):
    lecturelib.show_signature(receptive_field_of)
    out = capsys.readouterr().out
    assert out.startswith("# lecturelib/fully_conv.py\ndef receptive_field_of(layers")
    assert "(receptive field, jump)" in out and "jump *=" not in out and "for " not in out
    with pytest.raises(ValueError, match="not a function or class"):
        lecturelib.show_signature(3)

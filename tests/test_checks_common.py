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


def test_a_reference_reached_by_a_name_built_at_run_time_is_caught_while_the_check_runs(capsys):
    import importlib

    from lecturelib import fully_conv

    def sneaky(layers):
        module = importlib.import_module("lecturelib." + "fully_conv")
        return getattr(module, "receptive_field" + "_of")(layers)

    def own(layers):
        size, jump = 1, 1
        for kernel, stride in layers:
            size, jump = size + (kernel - 1) * jump, jump * stride
        return size, jump

    def check(student):
        def test():
            refuse_reference(student, fully_conv.receptive_field_of)
            for layers in ([(3, 1)], [(3, 1), (2, 2), (3, 1)]):
                if tuple(student(layers)) != fully_conv.receptive_field_of(layers):   # the check's own use is fine
                    raise CheckFailed(f"wrong for {layers}")
        return run_check("receptive field", test)

    assert check(sneaky) is False
    assert "your code called the course's own lecturelib.fully_conv.receptive_field_of while the check ran" in (
        capsys.readouterr().out)
    assert check(own) is True
    import sys
    assert sys.getprofile() is None                      # the watch is gone after the check


def test_the_owner_named_is_the_function_the_student_really_called():
    import torch.nn.functional as F

    from lecturelib.spatial_transformer import affine_grid

    def uses_torch(theta, h, w):
        return F.affine_grid(theta[None], (1, 1, h, w), align_corners=False)[0]

    assert "the library function torch.nn.functional.affine_grid" in message(
        lambda: refuse_reference(uses_torch, affine_grid, F.affine_grid))


def test_a_callable_object_calling_the_reference_is_refused(capsys):
    from lecturelib import fully_conv

    class Wrapper:
        def __call__(self, layers):
            return fully_conv.receptive_field_of(layers)

    with pytest.raises(CheckFailed, match="course's own lecturelib.fully_conv.receptive_field_of"):
        refuse_reference(Wrapper(), receptive_field_of)

    class Hidden:
        def __call__(self, layers):
            return getattr(fully_conv, "receptive_field" + "_of")(layers)

    def test():
        student = Hidden()
        refuse_reference(student, receptive_field_of)
        student([(3, 1)])

    assert run_check("receptive field", test) is False
    assert "while the check ran" in capsys.readouterr().out

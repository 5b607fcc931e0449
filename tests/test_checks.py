"""The one validation vocabulary (nnunet_sdm.checks) and the trainers' declared settings."""

from __future__ import annotations

import math

import pytest

from nnunet_sdm.checks import (
    check_choice,
    check_integer,
    check_non_negative,
    check_number,
    check_positive,
    integer,
    number,
    one_of,
    optional,
    positive,
)


@pytest.mark.parametrize("check", [check_positive, check_non_negative, check_number])
def test_bools_are_never_numbers(check):
    with pytest.raises(ValueError, match=r"^flag must be a finite number.*, got True$"):
        check("flag", True)


def test_integers_reject_bools_floats_and_small_values():
    assert check_integer("n", 3) == 3 and isinstance(check_integer("n", 3), int)
    for bad in (True, 2.0, 0, "3"):
        with pytest.raises(ValueError, match=r"^n must be an integer >= 1, got "):
            check_integer("n", bad)
    assert check_integer("epoch", 0, minimum=0) == 0


def test_one_message_format_with_bounds():
    assert check_positive("k", 3) == 3.0 and isinstance(check_positive("k", 3), float)
    with pytest.raises(ValueError, match=r"^k must be a finite number > 0, got 0$"):
        check_positive("k", 0)
    with pytest.raises(ValueError, match=r"^w must be a finite number >= 0, got -1$"):
        check_non_negative("w", -1)
    with pytest.raises(ValueError, match=r"^g must be a finite number in \(0, 1\], got 1.5$"):
        check_number("g", 1.5, minimum=0, maximum=1, above=True)
    with pytest.raises(ValueError, match=r"^f must be a finite number in \[0, 1\], got inf$"):
        check_number("f", math.inf, minimum=0, maximum=1)
    with pytest.raises(ValueError, match=r"^loss must be one of \('dice', 'map_dice'\), got 'ce'$"):
        check_choice("loss", "ce", ("dice", "map_dice"))
    with pytest.raises(ValueError, match="must be one of"):
        check_choice("mode", True, (0, 1))  # True == 1, but not a choice


def test_rules_bind_their_bounds():
    assert positive("a", 2) == 2.0
    assert number(minimum=0, maximum=1)("r", 0.5) == 0.5
    assert integer(2)("n", 2) == 2
    assert one_of("x", "y")("c", "y") == "y"
    assert optional(positive)("o", None) is None
    with pytest.raises(ValueError, match="^o must be a finite number > 0"):
        optional(positive)("o", -1.0)


def test_budget_rejects_bools():
    from nnunet_sdm.runner import Budget

    with pytest.raises(ValueError, match="budget epochs must be an integer >= 1, got True"):
        Budget(True, 2, 1)


def test_trainers_declare_their_settings_and_subclasses_add_to_them():
    from nnunet_sdm.training.li import nnUNetTrainerLRNet
    from nnunet_sdm.training.sdm import nnUNetTrainerSDM
    from nnunet_sdm.training.xue import nnUNetTrainerSDM_Xue2020, nnUNetTrainerSDM_Xue2020Truncated

    xue = nnUNetTrainerSDM_Xue2020.declared_setting_rules()
    truncated = nnUNetTrainerSDM_Xue2020Truncated.declared_setting_rules()
    assert set(truncated) == set(xue) | {"truncation_mm"}
    flagship = nnUNetTrainerSDM.declared_setting_rules()
    assert {"truncation_mm", "sdm_weight", "consistency_weight", "ramp_fraction"} <= set(flagship)
    for trainer in (nnUNetTrainerSDM, nnUNetTrainerSDM_Xue2020Truncated, nnUNetTrainerLRNet):
        rules = trainer.declared_setting_rules()
        for name, rule in rules.items():
            assert rule(name, getattr(trainer, name)) is not None or getattr(trainer, name) is None, name
    with pytest.raises(ValueError, match="sdm_weight must be a finite number >= 0, got True"):
        flagship["sdm_weight"]("sdm_weight", True)

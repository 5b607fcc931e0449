"""The demo's result table, and its note on classes no trainer learned within the budget."""

from __future__ import annotations

from nnunet_sdm.demo import format_table


def _summary(organ_dice: float, vessel_dice: float) -> dict:
    return {
        "mean": {
            "1": {"Dice": organ_dice, "HD95": 4.5, "ASSD": 1.25},
            "2": {"Dice": vessel_dice, "HD95": 60.0, "ASSD": 60.0},
        }
    }


def test_table_has_a_row_per_trainer_and_class():
    table = format_table({"A": _summary(0.9, 0.4), "B": _summary(0.8, 0.0)}, {1: "organ", 2: "vessel"})
    assert "| A | organ | 0.900 | 4.500 | 1.250 |" in table
    assert "| B | vessel | 0.000 | 60.000 | 60.000 |" in table
    assert "not learned" not in table  # A learned the vessel


def test_a_class_at_dice_zero_for_every_trainer_is_named():
    table = format_table({"A": _summary(0.9, 0.0), "B": _summary(0.8, 0.0)}, {1: "organ", 2: "vessel"})
    note = table.splitlines()[-1]
    assert note.startswith("not learned by any trainer within this budget: vessel (Dice 0)")
    assert "organ" not in note and "--epochs" in note

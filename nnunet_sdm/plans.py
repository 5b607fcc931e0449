"""Plans overrides: derive a new nnU-Net plans file from the planned one, without hand-editing JSON.

An override is a JSON object with an optional ``description`` and ``configuration`` settings (applied
to the configuration named on the command line, 3d_fullres by default):

- ``patch_size``: list of ints, one per axis, each divisible by the network's total stride on that axis;
- ``batch_size``: int >= 1;
- ``features_per_stage``: an explicit list (one int per stage) or ``{"base": B, "max": M}`` for
  B * 2^stage capped at M.

The new plans keep the configuration's ``data_identifier``: none of these settings change
preprocessing, so nnU-Net's existing preprocessed data serves them (no re-preprocessing needed).
Unknown keys, wrong types and impossible values stop with a message naming the key.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

CONFIGURATION_KEYS = {"patch_size", "batch_size", "features_per_stage"}


class PlansOverrideError(ValueError):
    """An override that cannot be applied; the message names the key."""


def _int_list(key: str, value: Any, length: int | None = None) -> list[int]:
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise PlansOverrideError(f"{key}: expected a list of integers, got {value!r}")
    if length is not None and len(value) != length:
        raise PlansOverrideError(f"{key}: expected {length} values, got {len(value)}")
    if any(v < 1 for v in value):
        raise PlansOverrideError(f"{key}: values must be >= 1, got {value}")
    return value


def apply_override(plans: dict, override: dict, configuration: str, plans_name: str) -> dict:
    """A copy of ``plans`` named ``plans_name`` with ``override`` applied to ``configuration``."""
    if not isinstance(override, dict):
        raise PlansOverrideError(f"override: expected a JSON object, got {type(override).__name__}")
    unknown = set(override) - {"description", "configuration"}
    if unknown:
        raise PlansOverrideError(
            f"unknown top-level key(s) {sorted(unknown)}; allowed: description, configuration"
        )
    settings = override.get("configuration", {})
    if not isinstance(settings, dict):
        raise PlansOverrideError("configuration: expected a JSON object")
    unknown = set(settings) - CONFIGURATION_KEYS
    if unknown:
        raise PlansOverrideError(
            f"configuration: unknown key(s) {sorted(unknown)}; allowed: {sorted(CONFIGURATION_KEYS)}"
        )
    if configuration not in plans.get("configurations", {}):
        raise PlansOverrideError(
            f"configuration {configuration!r} is not in the plans (have {sorted(plans.get('configurations', {}))})"
        )
    new = copy.deepcopy(plans)
    new["plans_name"] = plans_name
    config = new["configurations"][configuration]
    if "inherits_from" in config:
        raise PlansOverrideError(f"configuration {configuration!r} inherits from another; override that one")
    arch = config["architecture"]["arch_kwargs"]
    strides = arch["strides"]
    ndim = len(config["patch_size"])

    if "batch_size" in settings:
        value = settings["batch_size"]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise PlansOverrideError(f"configuration.batch_size: expected an integer >= 1, got {value!r}")
        config["batch_size"] = value
    if "patch_size" in settings:
        patch = _int_list("configuration.patch_size", settings["patch_size"], ndim)
        total_stride = [math.prod(s[axis] for s in strides) for axis in range(ndim)]
        bad = [axis for axis in range(ndim) if patch[axis] % total_stride[axis]]
        if bad:
            raise PlansOverrideError(
                f"configuration.patch_size {patch}: axis {bad} not divisible by the network's total stride "
                f"{total_stride} ({len(strides) - 1} down-samplings)"
            )
        config["patch_size"] = patch
    if "features_per_stage" in settings:
        value = settings["features_per_stage"]
        n_stages = arch["n_stages"]
        if isinstance(value, dict):
            if set(value) != {"base", "max"}:
                raise PlansOverrideError(
                    f"configuration.features_per_stage: expected keys base and max, got {sorted(value)}"
                )
            base, cap = _int_list("configuration.features_per_stage", [value["base"], value["max"]])
            value = [min(base * 2**i, cap) for i in range(n_stages)]
        config["architecture"]["arch_kwargs"]["features_per_stage"] = _int_list(
            "configuration.features_per_stage", value, n_stages
        )
    return new


def write_plans(
    preprocessed_dataset_dir: str | Path,
    override_file: str | Path,
    plans_name: str,
    configuration: str = "3d_fullres",
    source_plans: str = "nnUNetPlans",
) -> Path:
    """Write ``<plans_name>.json`` next to nnU-Net's plans in the dataset's preprocessed folder."""
    folder = Path(preprocessed_dataset_dir)
    source = folder / f"{source_plans}.json"
    if not source.is_file():
        raise FileNotFoundError(f"{source}: no plans to start from; run nnUNetv2_plan_and_preprocess first")
    override_file = Path(override_file)
    try:
        override = json.loads(override_file.read_text())
    except json.JSONDecodeError as e:
        raise PlansOverrideError(f"{override_file}: not valid JSON ({e})") from None
    try:
        new = apply_override(json.loads(source.read_text()), override, configuration, plans_name)
    except PlansOverrideError as e:
        raise PlansOverrideError(f"{override_file}: {e}") from None
    target = folder / f"{plans_name}.json"
    target.write_text(json.dumps(new, indent=4))
    return target


def bundled_override(name: str) -> Path:
    """Path of an override shipped in ``nnunet_sdm/plans_overrides/`` (the repository's plans_overrides/)."""
    folder = Path(__file__).resolve().parent / "plans_overrides"
    candidate = folder / f"{name}.json"
    if not candidate.is_file():
        available = sorted(p.stem for p in folder.glob("*.json"))
        raise FileNotFoundError(f"no bundled plans override named {name!r}; available: {available}")
    return candidate

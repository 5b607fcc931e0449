"""Plans overrides: derive a new nnU-Net plans file from the planned one, without hand-editing JSON.

An override is a JSON object with an optional ``description`` (a string) and ``configuration``
settings, applied to the configuration named on the command line (3d_fullres by default). Every
setting is optional; they are applied in this order:

- ``spacing``: list of numbers > 0 (mm, one per axis, nnU-Net's axis order). Changes preprocessing:
  the new plans get their own ``data_identifier`` (``<plans name>_<configuration>``), so run
  ``nnUNetv2_preprocess -d D -c C -plans_name <plans name>`` before training.
- ``patch_size``: list of ints, one per axis.
- ``n_stages``: the network's resolution stages (down-samplings + 1), with strides and kernel sizes
  chosen automatically for the patch by nnU-Net's planning rule (an axis is pooled while its spacing is
  within a factor 2 of the finest one and the bottleneck keeps ``bottleneck_min_edge`` voxels along it),
  pooling an axis only while its size in the patch stays a whole number, so the patch never changes:

  - an int N: exactly N stages; more down-samplings than the patch allows stop with an error;
  - ``{"max": N}``: as many stages as the patch allows, at most N ("N - 1 down-samplings where the
    patch allows");
  - ``"auto"``: as many as the patch allows (nnU-Net's own topology for this patch).

  Without ``n_stages`` the planned strides are kept and the patch must be divisible by their product.
- ``bottleneck_min_edge``: int >= 1, the smallest bottleneck edge for ``n_stages`` (nnU-Net: 4).
- ``features_per_stage``: an explicit list (one int per stage) or ``{"base": B, "max": M}`` for
  B * 2^stage capped at M. Required when the number of stages changes.
- ``n_conv_per_stage`` / ``n_conv_per_stage_decoder``: int (every stage) or list. When the number of
  stages changes and these are not given, the planned lists are cut or extended with their last value.
- ``network``: ``"PlainConvUNet"`` (nnU-Net's) or ``"XueUNet"``
  (:class:`nnunet_sdm.network.xue_unet.XueUNet`: the same encoder/decoder, with optional
  interpolation up-sampling). Only PlainConvUNet-style plans can be switched.
- ``upsampling``: ``"transposed_conv"`` (nnU-Net's), or ``"trilinear"`` / ``"bilinear"`` /
  ``"linear"`` (interpolation followed by a convolution; needs ``"network": "XueUNet"``).
- ``norm``: ``"instance"`` (nnU-Net's), ``"batch"``, ``"group"`` (8 groups) or
  ``{"type": "group", "num_groups": G}``; G must divide every stage's features.
- ``nonlin``: ``"LeakyReLU"`` (nnU-Net's, slope 0.01) or ``"ReLU"``.
- ``batch_size``: int >= 1.

Unknown keys, wrong types and impossible values stop with :class:`PlansOverrideError`, whose message
names the key (``configuration.<key>``). Without ``spacing`` the new plans keep the configuration's
``data_identifier``: none of the other settings change preprocessing, so nnU-Net's existing
preprocessed data serves them.
"""

from __future__ import annotations

import copy
import json
import math
import re
from pathlib import Path
from typing import Any

PLAIN_UNET = "dynamic_network_architectures.architectures.unet.PlainConvUNet"
XUE_UNET = "nnunet_sdm.network.xue_unet.XueUNet"
GROUP_NORM = "nnunet_sdm.network.xue_unet.GroupNorm"
NETWORKS = {"PlainConvUNet": PLAIN_UNET, "XueUNet": XUE_UNET}
NONLINS = {"LeakyReLU": "torch.nn.LeakyReLU", "ReLU": "torch.nn.ReLU"}
UPSAMPLING = {"transposed_conv", "linear", "trilinear", "bilinear"}
NORMS = {"instance", "batch", "group"}
DEFAULT_NUM_GROUPS = 8
NNUNET_BOTTLENECK_MIN_EDGE = 4  # nnU-Net's ExperimentPlanner.UNet_featuremap_min_edge_length

CONFIGURATION_KEYS = {
    "spacing",
    "patch_size",
    "n_stages",
    "bottleneck_min_edge",
    "features_per_stage",
    "n_conv_per_stage",
    "n_conv_per_stage_decoder",
    "network",
    "upsampling",
    "norm",
    "nonlin",
    "batch_size",
}


class PlansOverrideError(ValueError):
    """An override that cannot be applied; the message names the key."""


# ---- type checks ---------------------------------------------------------------------------------
def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive_int(key: str, value: Any) -> int:
    if not _is_int(value) or value < 1:
        raise PlansOverrideError(f"{key}: expected an integer >= 1, got {value!r}")
    return value


def _int_list(key: str, value: Any, length: int | None = None) -> list[int]:
    if not isinstance(value, list) or not all(_is_int(v) for v in value):
        raise PlansOverrideError(f"{key}: expected a list of integers, got {value!r}")
    if length is not None and len(value) != length:
        raise PlansOverrideError(f"{key}: expected {length} values, got {len(value)}")
    if any(v < 1 for v in value):
        raise PlansOverrideError(f"{key}: values must be >= 1, got {value}")
    return value


def _choice(key: str, value: Any, allowed) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise PlansOverrideError(f"{key}: expected one of {sorted(allowed)}, got {value!r}")
    return value


def _check_keys(key: str, value: dict, allowed: set[str], required: set[str] = frozenset()) -> None:
    unknown = set(value) - allowed
    if unknown:
        raise PlansOverrideError(f"{key}: unknown key(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    missing = set(required) - set(value)
    if missing:
        raise PlansOverrideError(f"{key}: missing key(s) {sorted(missing)}")


def _per_stage(key: str, value: Any, length: int) -> list[int]:
    if _is_int(value):
        return [_positive_int(key, value)] * length
    return _int_list(key, value, length)


def _resize(values: list[int], length: int) -> list[int]:
    """Cut ``values`` to ``length`` or extend it with its last value."""
    return [values[min(i, len(values) - 1)] for i in range(length)]


# ---- topology ------------------------------------------------------------------------------------
def automatic_topology(
    spacing, patch_size, max_downsamplings: int | None = None, min_edge: int = NNUNET_BOTTLENECK_MIN_EDGE
) -> tuple[list[list[int]], list[list[int]]]:
    """Strides and kernel sizes for a patch by nnU-Net's rule (``get_pool_and_conv_props``).

    The same greedy loop as nnU-Net 2.8.1's planner: per down-sampling, pool the axes whose spacing is
    within a factor 2 of the finest and whose size is at least ``2 * min_edge`` (a lone axis needs
    ``3 * min_edge``); kernels are 3 along axes within a factor 2 of the finest spacing, else 1; the
    bottleneck's kernel is 3 everywhere. One difference: an axis is pooled only while its size is even,
    so the patch never needs padding (for the patches nnU-Net plans, which it pads to be divisible,
    the result is nnU-Net's). Stops after ``max_downsamplings`` (None: no limit). Returns
    ``(strides, kernel_sizes)``, one entry per stage.
    """
    dim = len(spacing)
    current_spacing = [float(s) for s in spacing]
    size = [int(p) for p in patch_size]
    strides = [[1] * dim]
    kernels: list[list[int]] = []
    kernel = [1] * dim
    while max_downsamplings is None or len(strides) - 1 < max_downsamplings:
        axes = [i for i in range(dim) if size[i] >= 2 * min_edge]
        if not axes:
            break
        finest = min(current_spacing[i] for i in axes)
        axes = [i for i in axes if current_spacing[i] / finest < 2]
        if len(axes) == 1 and size[axes[0]] < 3 * min_edge:
            break
        axes = [i for i in axes if size[i] % 2 == 0]  # ours: keep the patch as it is
        if not axes:
            break
        for d in range(dim):
            if current_spacing[d] / min(current_spacing) < 2:
                kernel[d] = 3
        stride = [1] * dim
        for axis in axes:
            stride[axis] = 2
            current_spacing[axis] *= 2
            size[axis] //= 2
        strides.append(stride)
        kernels.append(list(kernel))
    kernels.append([3] * dim)
    return strides, kernels


def _total_stride(strides: list[list[int]], ndim: int) -> list[int]:
    return [math.prod(s[axis] for s in strides) for axis in range(ndim)]


# ---- apply ---------------------------------------------------------------------------------------
def apply_override(plans: dict, override: dict, configuration: str, plans_name: str) -> dict:
    """A copy of ``plans`` named ``plans_name`` with ``override`` applied to ``configuration``."""
    if not isinstance(override, dict):
        raise PlansOverrideError(f"override: expected a JSON object, got {type(override).__name__}")
    unknown = set(override) - {"description", "configuration"}
    if unknown:
        raise PlansOverrideError(
            f"unknown top-level key(s) {sorted(unknown)}; allowed: description, configuration"
        )
    if "description" in override and not isinstance(override["description"], str):
        raise PlansOverrideError(f"description: expected a string, got {override['description']!r}")
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
    _apply_configuration(config, settings, configuration, plans_name)
    return new


def _apply_configuration(config: dict, settings: dict, configuration: str, plans_name: str) -> None:
    def key(name: str) -> str:
        return f"configuration.{name}"

    architecture = config["architecture"]
    arch = architecture["arch_kwargs"]
    ndim = len(config["patch_size"])
    source_class = architecture["network_class_name"]
    plain_style = "n_conv_per_stage" in arch and source_class in (PLAIN_UNET, XUE_UNET)

    # -- spacing (changes preprocessing) --
    if "spacing" in settings:
        value = settings["spacing"]
        if (
            not isinstance(value, list)
            or len(value) != ndim
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in value)
        ):
            raise PlansOverrideError(f"{key('spacing')}: expected {ndim} numbers > 0 (mm), got {value!r}")
        old = config["spacing"]
        if [float(v) for v in value] != [float(v) for v in old]:
            config["median_image_size_in_voxels"] = [
                float(m) * float(o) / float(s)
                for m, o, s in zip(config["median_image_size_in_voxels"], old, value)
            ]
            config["spacing"] = [float(v) for v in value]
            config["data_identifier"] = f"{plans_name}_{configuration}"

    # -- patch --
    if "patch_size" in settings:
        config["patch_size"] = _int_list(key("patch_size"), settings["patch_size"], ndim)
    patch = config["patch_size"]

    # -- topology --
    old_n_stages = arch["n_stages"]
    if "bottleneck_min_edge" in settings and "n_stages" not in settings:
        raise PlansOverrideError(f"{key('bottleneck_min_edge')}: only used with n_stages; add n_stages")
    if "n_stages" in settings:
        if not plain_style:
            raise PlansOverrideError(
                f"{key('n_stages')}: supported for PlainConvUNet/XueUNet plans only; these plans use "
                f"{source_class}"
            )
        min_edge = _positive_int(
            key("bottleneck_min_edge"), settings.get("bottleneck_min_edge", NNUNET_BOTTLENECK_MIN_EDGE)
        )
        value = settings["n_stages"]
        strict = None
        if value == "auto":
            limit = None
        elif _is_int(value):
            strict = limit = _positive_int(key("n_stages"), value)
        elif isinstance(value, dict):
            _check_keys(key("n_stages"), value, {"max"}, {"max"})
            limit = _positive_int(key("n_stages") + ".max", value["max"])
        else:
            raise PlansOverrideError(
                f'{key("n_stages")}: expected an integer, {{"max": N}} or "auto", got {value!r}'
            )
        strides, kernels = automatic_topology(
            config["spacing"], patch, None if limit is None else limit - 1, min_edge
        )
        if strict is not None and len(strides) < strict:
            raise PlansOverrideError(
                f"{key('n_stages')}: {strict} stages need {strict - 1} down-samplings, but patch {patch} with "
                f"spacing {config['spacing']} allows at most {len(strides) - 1} (bottleneck edge >= {min_edge} "
                'voxels, axes kept whole); use {"max": N}, a larger patch_size or a smaller bottleneck_min_edge'
            )
        if len(strides) < 2:
            raise PlansOverrideError(
                f"{key('n_stages')}: patch {patch} with spacing {config['spacing']} allows no down-sampling "
                f"(bottleneck edge >= {min_edge} voxels); a U-Net needs at least one"
            )
        arch.update(n_stages=len(strides), strides=strides, kernel_sizes=kernels)
    n_stages = arch["n_stages"]
    total = _total_stride(arch["strides"], ndim)
    bad = [axis for axis in range(ndim) if patch[axis] % total[axis]]
    if bad:
        raise PlansOverrideError(
            f"{key('patch_size')} {patch}: axis {bad} not divisible by the network's total stride "
            f"{total} ({n_stages - 1} down-samplings); choose a divisible patch or set n_stages to "
            "re-plan the strides for the patch"
        )

    # -- per-stage lists --
    if "features_per_stage" in settings:
        value = settings["features_per_stage"]
        name = key("features_per_stage")
        if isinstance(value, dict):
            _check_keys(name, value, {"base", "max"}, {"base", "max"})
            base = _positive_int(f"{name}.base", value["base"])
            cap = _positive_int(f"{name}.max", value["max"])
            if cap < base:
                raise PlansOverrideError(f"{name}.max: {cap} is smaller than base {base}")
            value = [min(base * 2**i, cap) for i in range(n_stages)]
        arch["features_per_stage"] = _int_list(name, value, n_stages)
    elif n_stages != old_n_stages:
        raise PlansOverrideError(
            f"{key('features_per_stage')}: the network now has {n_stages} stages (planned: {old_n_stages}); "
            'give features_per_stage, e.g. {"base": 32, "max": 320} (nnU-Net\'s 3D default)'
        )
    if plain_style:
        for name, length in (("n_conv_per_stage", n_stages), ("n_conv_per_stage_decoder", n_stages - 1)):
            if name in settings:
                arch[name] = _per_stage(key(name), settings[name], length)
            else:
                arch[name] = _resize(list(arch[name]), length)
    else:
        for name in ("n_conv_per_stage", "n_conv_per_stage_decoder"):
            if name in settings:
                raise PlansOverrideError(
                    f"{key(name)}: supported for PlainConvUNet/XueUNet plans only; these plans use {source_class}"
                )

    # -- network class and up-sampling --
    network = source_class
    if "network" in settings:
        network = NETWORKS[_choice(key("network"), settings["network"], NETWORKS)]
        if network != source_class and not plain_style:
            raise PlansOverrideError(
                f"{key('network')}: only PlainConvUNet-style plans can be switched; these plans use {source_class}"
            )
        architecture["network_class_name"] = network
    if "upsampling" in settings:
        mode = _choice(key("upsampling"), settings["upsampling"], UPSAMPLING)
        expected = {2: "bilinear", 3: "trilinear"}.get(ndim)
        if mode in ("trilinear", "bilinear") and mode != expected:
            raise PlansOverrideError(f"{key('upsampling')}: {mode!r} does not fit a {ndim}D configuration")
        if mode != "transposed_conv" and network != XUE_UNET:
            raise PlansOverrideError(
                f'{key("upsampling")}: {mode!r} needs "network": "XueUNet" (the plans\' network '
                f"{network.rsplit('.', 1)[-1]} up-samples by transposed convolution)"
            )
    else:
        mode = arch.get("upsampling", "linear")
    if network == XUE_UNET:
        arch["upsampling"] = "transposed_conv" if mode == "transposed_conv" else "linear"
    else:
        arch.pop("upsampling", None)

    # -- normalisation and non-linearity --
    if "norm" in settings:
        value = settings["norm"]
        name = key("norm")
        if isinstance(value, dict):
            _check_keys(name, value, {"type", "num_groups"}, {"type"})
            kind = _choice(f"{name}.type", value["type"], NORMS)
            if "num_groups" in value and kind != "group":
                raise PlansOverrideError(f"{name}.num_groups: only for type 'group', got type {kind!r}")
            groups = _positive_int(f"{name}.num_groups", value.get("num_groups", DEFAULT_NUM_GROUPS))
        else:
            kind = _choice(name, value, NORMS)
            groups = DEFAULT_NUM_GROUPS
        suffix = f"{ndim}d"
        if kind == "instance":
            arch["norm_op"] = f"torch.nn.modules.instancenorm.InstanceNorm{suffix}"
            arch["norm_op_kwargs"] = {"eps": 1e-5, "affine": True}
        elif kind == "batch":
            arch["norm_op"] = f"torch.nn.modules.batchnorm.BatchNorm{suffix}"
            arch["norm_op_kwargs"] = {"eps": 1e-5, "affine": True}
        else:
            arch["norm_op"] = GROUP_NORM
            arch["norm_op_kwargs"] = {"num_groups": groups, "eps": 1e-5, "affine": True}
    if arch.get("norm_op") == GROUP_NORM:
        groups = arch["norm_op_kwargs"]["num_groups"]
        indivisible = [f for f in arch["features_per_stage"] if f % groups]
        if indivisible:
            raise PlansOverrideError(
                f"{key('norm')}.num_groups: {groups} groups do not divide the features {indivisible} of "
                f"features_per_stage {arch['features_per_stage']}"
            )
    if "nonlin" in settings:
        arch["nonlin"] = NONLINS[_choice(key("nonlin"), settings["nonlin"], NONLINS)]
        arch["nonlin_kwargs"] = {"inplace": True}

    # -- batch --
    if "batch_size" in settings:
        config["batch_size"] = _positive_int(key("batch_size"), settings["batch_size"])


# ---- files ---------------------------------------------------------------------------------------
_PLANS_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def check_plans_name(plans_name: str, source_plans: str = "nnUNetPlans") -> None:
    """A plans identifier that nnU-Net can use in file and folder names (``Trainer__Plans__config``)."""
    if not _PLANS_NAME.match(plans_name) or "__" in plans_name or plans_name.endswith(".json"):
        raise PlansOverrideError(
            f"--name {plans_name!r}: use letters, digits, '_', '-', '.', no '__' (nnU-Net splits model folder "
            "names at '__') and no .json ending"
        )
    if plans_name == source_plans:
        raise PlansOverrideError(
            f"--name {plans_name!r}: would overwrite the source plans; choose a new name"
        )


def write_plans(
    preprocessed_dataset_dir: str | Path,
    override_file: str | Path,
    plans_name: str,
    configuration: str = "3d_fullres",
    source_plans: str = "nnUNetPlans",
) -> Path:
    """Write ``<plans_name>.json`` next to nnU-Net's plans in the dataset's preprocessed folder.

    ``source_plans`` may itself be a derived plans file, so overrides compose (e.g. a published
    architecture, then a smaller variant of it for a CPU test).
    """
    check_plans_name(plans_name, source_plans)
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


def needs_preprocessing(preprocessed_dataset_dir: str | Path, plans_name: str, configuration: str) -> bool:
    """Whether the configuration's preprocessed data (its ``data_identifier`` folder) is missing."""
    folder = Path(preprocessed_dataset_dir)
    plans = json.loads((folder / f"{plans_name}.json").read_text())
    identifier = plans["configurations"][configuration].get("data_identifier")
    return identifier is None or not (folder / identifier).is_dir()


def bundled_override(name: str) -> Path:
    """Path of an override shipped in ``nnunet_sdm/plans_overrides/`` (the repository's plans_overrides/)."""
    folder = Path(__file__).resolve().parent / "plans_overrides"
    candidate = folder / f"{name}.json"
    if not candidate.is_file():
        available = sorted(p.stem for p in folder.glob("*.json"))
        raise FileNotFoundError(f"no bundled plans override named {name!r}; available: {available}")
    return candidate

"""Plans overrides (nnunet_sdm.plans), the Xue backbone they select and Xue's optimiser: fast unit tests."""

from __future__ import annotations

import copy
import json
import random

import pytest
import torch

from nnunet_sdm.plans import (
    GROUP_NORM,
    PLAIN_UNET,
    XUE_UNET,
    PlansOverrideError,
    apply_override,
    automatic_topology,
    bundled_override,
    check_plans_name,
    write_plans,
)


def make_plans(spacing=(2.5, 0.8, 0.8), patch=(16, 48, 48)) -> dict:
    """nnU-Net 2.8.1 plans as its ExperimentPlanner writes them (3d_fullres of the synthetic dataset)."""
    strides, kernels = automatic_topology(spacing, patch)
    n = len(strides)
    return {
        "dataset_name": "Dataset990_SDMSynth",
        "plans_name": "nnUNetPlans",
        "configurations": {
            "3d_fullres": {
                "data_identifier": "nnUNetPlans_3d_fullres",
                "preprocessor_name": "DefaultPreprocessor",
                "batch_size": 2,
                "patch_size": list(patch),
                "median_image_size_in_voxels": [float(p) for p in patch],
                "spacing": list(spacing),
                "architecture": {
                    "network_class_name": PLAIN_UNET,
                    "arch_kwargs": {
                        "n_stages": n,
                        "features_per_stage": [min(32 * 2**i, 320) for i in range(n)],
                        "conv_op": "torch.nn.modules.conv.Conv3d",
                        "kernel_sizes": kernels,
                        "strides": strides,
                        "n_conv_per_stage": [2] * n,
                        "n_conv_per_stage_decoder": [2] * (n - 1),
                        "conv_bias": True,
                        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
                        "norm_op_kwargs": {"eps": 1e-05, "affine": True},
                        "dropout_op": None,
                        "dropout_op_kwargs": None,
                        "nonlin": "torch.nn.LeakyReLU",
                        "nonlin_kwargs": {"inplace": True},
                    },
                    "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
                },
                "batch_dice": False,
            },
            "3d_cascade_fullres": {"inherits_from": "3d_fullres", "previous_stage": "3d_lowres"},
        },
    }


def apply(settings: dict, plans: dict | None = None, configuration: str = "3d_fullres") -> dict:
    new = apply_override(plans or make_plans(), {"configuration": settings}, configuration, "P")
    return new["configurations"][configuration]


def build(config: dict, num_classes: int = 3, deep_supervision: bool = True):
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    a = config["architecture"]
    return get_network_from_plans(
        a["network_class_name"],
        a["arch_kwargs"],
        a["_kw_requires_import"],
        1,
        num_classes,
        deep_supervision=deep_supervision,
    )


# ---- errors: every one names its key ---------------------------------------------------------
ERRORS = [
    ({"configuration": {}, "extra": 1}, "unknown top-level key"),
    ({"description": 3}, "description"),
    ({"configuration": []}, "configuration: expected a JSON object"),
    ({"configuration": {"patch": [16, 48, 48]}}, r"configuration: unknown key\(s\) \['patch'\]"),
    ({"configuration": {"batch_size": "2"}}, "configuration.batch_size"),
    ({"configuration": {"batch_size": 0}}, "configuration.batch_size"),
    ({"configuration": {"batch_size": True}}, "configuration.batch_size"),
    ({"configuration": {"patch_size": [16, 48]}}, "configuration.patch_size"),
    ({"configuration": {"patch_size": [16.0, 48, 48]}}, "configuration.patch_size"),
    ({"configuration": {"patch_size": [16, 44, 48]}}, r"configuration.patch_size .*not divisible"),
    ({"configuration": {"spacing": [1, 1]}}, "configuration.spacing"),
    ({"configuration": {"spacing": [1, -1, 1]}}, "configuration.spacing"),
    ({"configuration": {"n_stages": "deep"}}, "configuration.n_stages"),
    ({"configuration": {"n_stages": 2.0}}, "configuration.n_stages"),
    ({"configuration": {"n_stages": {"min": 3}}}, r"configuration.n_stages: unknown key"),
    ({"configuration": {"n_stages": {"max": 0}}}, r"configuration.n_stages.max"),
    ({"configuration": {"n_stages": 7, "features_per_stage": [8] * 7}}, "configuration.n_stages: 7 stages"),
    ({"configuration": {"bottleneck_min_edge": 2}}, "configuration.bottleneck_min_edge"),
    (
        {"configuration": {"n_stages": "auto", "bottleneck_min_edge": "2"}},
        "configuration.bottleneck_min_edge",
    ),
    ({"configuration": {"n_stages": 3}}, "configuration.features_per_stage: the network now has 3 stages"),
    ({"configuration": {"features_per_stage": [8, 16]}}, "configuration.features_per_stage"),
    ({"configuration": {"features_per_stage": {"base": 8}}}, "configuration.features_per_stage: missing"),
    (
        {"configuration": {"features_per_stage": {"base": 8, "max": 4}}},
        "configuration.features_per_stage.max",
    ),
    ({"configuration": {"features_per_stage": "wide"}}, "configuration.features_per_stage"),
    ({"configuration": {"n_conv_per_stage": [2, 2]}}, "configuration.n_conv_per_stage"),
    ({"configuration": {"n_conv_per_stage_decoder": 0}}, "configuration.n_conv_per_stage_decoder"),
    ({"configuration": {"network": "ResUNet"}}, "configuration.network"),
    ({"configuration": {"upsampling": "nearest"}}, "configuration.upsampling"),
    (
        {"configuration": {"upsampling": "trilinear"}},
        r"configuration.upsampling: 'trilinear' needs .*XueUNet",
    ),
    ({"configuration": {"network": "XueUNet", "upsampling": "bilinear"}}, "configuration.upsampling"),
    ({"configuration": {"norm": "layer"}}, "configuration.norm"),
    ({"configuration": {"norm": {"type": "group", "groups": 4}}}, "configuration.norm: unknown key"),
    ({"configuration": {"norm": {"type": "instance", "num_groups": 4}}}, "configuration.norm.num_groups"),
    ({"configuration": {"norm": {"type": "group", "num_groups": 0}}}, "configuration.norm.num_groups"),
    ({"configuration": {"norm": {"type": "group", "num_groups": 24}}}, "configuration.norm.num_groups: 24"),
    ({"configuration": {"nonlin": "GELU"}}, "configuration.nonlin"),
]


@pytest.mark.parametrize(("override", "message"), ERRORS, ids=[m for _, m in ERRORS])
def test_errors_name_the_key(override, message):
    with pytest.raises(PlansOverrideError, match=message):
        apply_override(make_plans(), override, "3d_fullres", "P")


def test_impossible_down_samplings_say_how_many_the_patch_allows():
    with pytest.raises(
        PlansOverrideError, match=r"configuration.n_stages: 7 stages need 6 down-samplings.*at most 3"
    ):
        apply({"n_stages": 7, "features_per_stage": {"base": 8, "max": 64}})


def test_configuration_errors():
    with pytest.raises(PlansOverrideError, match="'2d' is not in the plans"):
        apply_override(make_plans(), {}, "2d", "P")
    with pytest.raises(PlansOverrideError, match="inherits from another"):
        apply_override(make_plans(), {}, "3d_cascade_fullres", "P")
    with pytest.raises(PlansOverrideError, match="override: expected a JSON object"):
        apply_override(make_plans(), [], "3d_fullres", "P")


def test_switching_non_plain_plans_is_refused():
    plans = make_plans()
    arch = plans["configurations"]["3d_fullres"]["architecture"]
    arch["network_class_name"] = "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet"
    arch["arch_kwargs"]["n_blocks_per_stage"] = arch["arch_kwargs"].pop("n_conv_per_stage")
    for settings, key in (
        ({"network": "XueUNet"}, "configuration.network"),
        ({"n_stages": "auto"}, "configuration.n_stages"),
        ({"n_conv_per_stage": 2}, "configuration.n_conv_per_stage"),
    ):
        with pytest.raises(PlansOverrideError, match=key):
            apply(settings, copy.deepcopy(plans))
    assert apply({"batch_size": 1}, plans)["batch_size"] == 1  # the rest still works


@pytest.mark.parametrize("name", ["P__x", "a/b", "", "P.json", "_x"])
def test_plans_names_nnunet_cannot_use_are_refused(name):
    with pytest.raises(PlansOverrideError, match="--name"):
        check_plans_name(name)


def test_overwriting_the_source_plans_is_refused(tmp_path):
    (tmp_path / "nnUNetPlans.json").write_text(json.dumps(make_plans()))
    with pytest.raises(PlansOverrideError, match="would overwrite the source plans"):
        write_plans(tmp_path, bundled_override("cpu_small"), "nnUNetPlans")


def test_invalid_json_names_the_file(tmp_path):
    (tmp_path / "nnUNetPlans.json").write_text(json.dumps(make_plans()))
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(PlansOverrideError, match="bad.json: not valid JSON"):
        write_plans(tmp_path, bad, "P")
    bad.write_text(json.dumps({"configuration": {"batch_size": -1}}))
    with pytest.raises(PlansOverrideError, match=r"bad.json: configuration.batch_size"):
        write_plans(tmp_path, bad, "P")


def test_cli_reports_errors_with_the_key_and_exit_code_2(tmp_path, monkeypatch, capsys):
    from nnunet_sdm.cli import main

    folder = tmp_path / "Dataset990_SDMSynth"
    folder.mkdir()
    (folder / "nnUNetPlans.json").write_text(json.dumps(make_plans()))
    (folder / "nnUNetPlans_3d_fullres").mkdir()
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"configuration": {"upsampling": 3}}))
    assert main(["plans", "apply", "Dataset990_SDMSynth", str(bad), "--name", "P"]) == 2
    assert "configuration.upsampling" in capsys.readouterr().err
    assert main(["plans", "apply", "Dataset990_SDMSynth", "cpu_small", "--name", "P"]) == 0
    out = capsys.readouterr().out
    assert "no preprocessing needed" in out and "-p P" in out
    assert (folder / "P.json").is_file()
    # overrides compose: start from the derived plans
    assert (
        main(
            [
                "plans",
                "apply",
                "Dataset990_SDMSynth",
                "xue2020_deep_unet",
                "--name",
                "Q",
                "--source-plans",
                "P",
            ]
        )
        == 0
    )
    assert json.loads((folder / "Q.json").read_text())["plans_name"] == "Q"
    spacing = tmp_path / "spacing.json"
    spacing.write_text(json.dumps({"configuration": {"spacing": [2.5, 1.6, 1.6]}}))
    assert main(["plans", "apply", "Dataset990_SDMSynth", str(spacing), "--name", "R"]) == 0
    assert "nnUNetv2_preprocess -d Dataset990_SDMSynth -c 3d_fullres -plans_name R" in capsys.readouterr().out


# ---- what the settings do --------------------------------------------------------------------
def test_automatic_topology_is_nnunets_on_the_patches_nnunet_plans():
    from nnunetv2.experiment_planning.experiment_planners.network_topology import get_pool_and_conv_props

    rng = random.Random(0)
    for _ in range(2000):
        spacing = [rng.choice([0.5, 0.8, 1.0, 1.5, 2.5, 3.0, 5.0]) for _ in range(3)]
        size = [rng.randint(8, 300) for _ in range(3)]
        min_edge = rng.choice([2, 4])
        _, pool, conv, patch, _ = get_pool_and_conv_props(spacing, size, min_edge, 999999)
        strides, kernels = automatic_topology(spacing, [int(p) for p in patch], None, min_edge)
        assert strides == [list(p) for p in pool] and kernels == [list(k) for k in conv], (spacing, patch)


def test_automatic_topology_reproduces_the_planned_network():
    plans = make_plans()
    config = apply({"n_stages": "auto"}, plans)
    assert config["architecture"] == plans["configurations"]["3d_fullres"]["architecture"]
    assert config["data_identifier"] == "nnUNetPlans_3d_fullres"


def test_automatic_topology_never_pads_the_patch():
    # 80 = 5 * 16: nnU-Net's rule at bottleneck edge 2 would pool z a 5th time and pad the patch to 96
    strides, kernels = automatic_topology([2.5, 0.8, 0.8], [80, 192, 160], 6, 2)
    assert len(strides) == 7 and len(kernels) == 7
    total = [1, 1, 1]
    for s in strides:
        total = [t * x for t, x in zip(total, s)]
    assert all(p % t == 0 for p, t in zip([80, 192, 160], total))


def test_n_stages_max_stops_where_the_patch_stops():
    config = apply({"n_stages": {"max": 7}, "features_per_stage": {"base": 8, "max": 64}})
    assert config["architecture"]["arch_kwargs"]["n_stages"] == 4  # 16 x 48 x 48: 3 down-samplings
    config = apply({"n_stages": {"max": 3}, "features_per_stage": {"base": 8, "max": 64}})
    arch = config["architecture"]["arch_kwargs"]
    assert arch["n_stages"] == 3 and arch["strides"] == [[1, 1, 1], [1, 2, 2], [2, 2, 2]]
    assert arch["n_conv_per_stage"] == [2, 2, 2] and arch["n_conv_per_stage_decoder"] == [2, 2]
    assert arch["kernel_sizes"][-1] == [3, 3, 3]


def test_spacing_changes_the_data_identifier_and_the_median_size():
    config = apply({"spacing": [2.5, 1.6, 1.6]})
    assert config["data_identifier"] == "P_3d_fullres"
    assert config["median_image_size_in_voxels"] == pytest.approx([16, 24, 24])
    assert apply({"spacing": [2.5, 0.8, 0.8]})["data_identifier"] == "nnUNetPlans_3d_fullres"


def test_norm_nonlin_and_per_stage_settings():
    config = apply(
        {"norm": "batch", "nonlin": "ReLU", "n_conv_per_stage": 1, "n_conv_per_stage_decoder": [1, 2, 3]}
    )
    arch = config["architecture"]["arch_kwargs"]
    assert arch["norm_op"] == "torch.nn.modules.batchnorm.BatchNorm3d"
    assert arch["nonlin"] == "torch.nn.ReLU"
    assert arch["n_conv_per_stage"] == [1] * 4 and arch["n_conv_per_stage_decoder"] == [1, 2, 3]
    arch = apply({"norm": "group", "features_per_stage": {"base": 8, "max": 64}})["architecture"][
        "arch_kwargs"
    ]
    assert arch["norm_op"] == GROUP_NORM and arch["norm_op_kwargs"]["num_groups"] == 8
    build(
        {
            "architecture": {
                **make_plans()["configurations"]["3d_fullres"]["architecture"],
                "arch_kwargs": arch,
            }
        }
    )


def test_bundled_overrides_apply_to_planned_plans():
    for name in ("cpu_small", "xue2020_deep_unet", "flare21"):
        override = json.loads(bundled_override(name).read_text())
        assert isinstance(override["description"], str)
        apply_override(make_plans(), override, "3d_fullres", "P")


def test_xue_override_on_a_large_isotropic_patch_is_the_papers_network():
    plans = make_plans(spacing=(1.0, 1.0, 1.0), patch=(128, 128, 128))
    override = json.loads(bundled_override("xue2020_deep_unet").read_text())
    config = apply_override(plans, override, "3d_fullres", "P")["configurations"]["3d_fullres"]
    arch = config["architecture"]["arch_kwargs"]
    assert config["architecture"]["network_class_name"] == XUE_UNET
    assert arch["n_stages"] == 7  # 6 down-samplings, bottleneck 2 x 2 x 2
    assert arch["strides"] == [[1, 1, 1]] + [[2, 2, 2]] * 6
    assert arch["features_per_stage"] == [24, 48, 96, 192, 384, 384, 384]
    assert arch["norm_op"] == GROUP_NORM and arch["upsampling"] == "linear"
    assert arch["nonlin"] == "torch.nn.LeakyReLU" and config["batch_size"] == 1
    assert config["data_identifier"] == "nnUNetPlans_3d_fullres"


def test_flare21_override_is_table_3_with_nnunets_topology_for_the_patch():
    from nnunetv2.experiment_planning.experiment_planners.network_topology import get_pool_and_conv_props

    plans = make_plans(spacing=(2.5, 0.8, 0.8), patch=(64, 128, 128))
    override = json.loads(bundled_override("flare21").read_text())
    config = apply_override(plans, override, "3d_fullres", "P")["configurations"]["3d_fullres"]
    arch = config["architecture"]["arch_kwargs"]
    assert config["patch_size"] == [80, 192, 160] and config["batch_size"] == 2
    _, pool, conv, patch, _ = get_pool_and_conv_props([2.5, 0.8, 0.8], [80, 192, 160], 4, 999999)
    assert list(patch) == [80, 192, 160]
    assert arch["strides"] == [list(p) for p in pool] and arch["kernel_sizes"] == [list(k) for k in conv]
    assert arch["features_per_stage"] == [32, 64, 128, 256, 320, 320]
    assert config["architecture"]["network_class_name"] == PLAIN_UNET
    build(config)  # nnU-Net builds it (no forward pass: too large for a unit test)


# ---- the Xue backbone ------------------------------------------------------------------------
def xue_config(base=4, cap=16, groups=4):
    return apply(
        {
            "n_stages": {"max": 7},
            "bottleneck_min_edge": 2,
            "features_per_stage": {"base": base, "max": cap},
            "network": "XueUNet",
            "upsampling": "trilinear",
            "norm": {"type": "group", "num_groups": groups},
        }
    )


def test_xue_unet_builds_from_plans_with_nnunets_structure():
    from nnunet_sdm.network.xue_unet import GroupNorm, UpsampleConv, XueUNet

    net = build(xue_config())
    assert isinstance(net, XueUNet)
    assert all(isinstance(m, UpsampleConv) for m in net.decoder.transpconvs)
    assert not any(isinstance(m, torch.nn.ConvTranspose3d) for m in net.modules())
    assert any(isinstance(m, GroupNorm) for m in net.modules())
    x = torch.randn(1, 1, 16, 48, 48)
    outputs = net(x)
    assert [tuple(o.shape[2:]) for o in outputs] == [(16, 48, 48), (16, 24, 24), (8, 12, 12), (4, 6, 6)]
    net.decoder.deep_supervision = False  # what nnU-Net's set_deep_supervision_enabled does
    assert net(x).shape == (1, 3, 16, 48, 48)


def test_xue_unet_in_the_sdm_head_loads_strictly_and_pretrained(tmp_path):
    from nnunetv2.run.load_pretrained_weights import load_pretrained_weights

    from nnunet_sdm.network import SDMHeadNetwork

    config = xue_config()
    train = SDMHeadNetwork(build(config, num_classes=2, deep_supervision=True), 0, 2)
    infer = SDMHeadNetwork(build(config, num_classes=2, deep_supervision=False), 0, 2)
    infer.load_state_dict(train.state_dict(), strict=True)
    assert any(k.startswith("decoder.transpconvs.0.conv.") for k in train.state_dict())
    with torch.no_grad():
        assert infer.eval()(torch.zeros(1, 1, 16, 48, 48)).shape[1] == 3  # background + 2 Heaviside logits
    checkpoint = {"network_weights": build(config, num_classes=5).state_dict()}  # other output layers
    torch.save(checkpoint, tmp_path / "other.pth")
    load_pretrained_weights(train, str(tmp_path / "other.pth"))
    key = "decoder.transpconvs.0.conv.weight"
    assert torch.equal(train.state_dict()[key], checkpoint["network_weights"][key])


def test_group_norm_takes_channels_first_and_checks_divisibility():
    from nnunet_sdm.network.xue_unet import GroupNorm

    norm = GroupNorm(24, num_groups=8)
    assert norm.num_groups == 8 and norm.num_channels == 24
    with pytest.raises(ValueError, match="8 groups do not divide 12"):
        GroupNorm(12, num_groups=8)


def test_xue_unet_with_transposed_conv_is_plain_conv_unet():
    from dynamic_network_architectures.architectures.unet import PlainConvUNet

    config = xue_config()
    config["architecture"]["arch_kwargs"]["upsampling"] = "transposed_conv"
    net = build(config)
    torch.manual_seed(0)
    plain_config = copy.deepcopy(config)
    plain_config["architecture"]["network_class_name"] = PLAIN_UNET
    del plain_config["architecture"]["arch_kwargs"]["upsampling"]
    plain = build(plain_config)
    assert isinstance(plain, PlainConvUNet)
    plain.load_state_dict(net.state_dict(), strict=True)


# ---- Xue's optimiser -------------------------------------------------------------------------
def test_step_decay_schedule_as_nnunet_steps_it():
    from nnunet_sdm.training.xue_optim import StepDecayLRScheduler

    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=5e-4)
    scheduler = StepDecayLRScheduler(optimizer, 5e-4)
    expected = {0: 5e-4, 24: 5e-4, 25: 4e-4, 49: 4e-4, 50: 3.2e-4, 999: 5e-4 * 0.8**39}
    for epoch, lr in expected.items():
        scheduler.step(epoch)  # nnUNetTrainer.on_train_epoch_start: lr_scheduler.step(current_epoch)
        assert optimizer.param_groups[0]["lr"] == pytest.approx(lr)
        assert scheduler.get_last_lr() == [pytest.approx(lr)]
    fresh = StepDecayLRScheduler(optimizer, 1.0, step_epochs=2, gamma=0.5)  # torch's initial step: epoch 0
    assert optimizer.param_groups[0]["lr"] == 1.0
    for lr in (1.0, 0.5, 0.5, 0.25):  # step() without an epoch counts on: 1, 2, 3, 4
        fresh.step()
        assert optimizer.param_groups[0]["lr"] == pytest.approx(lr)
    for kwargs in ({"step_epochs": 0}, {"gamma": 0.0}, {"initial_lr": 0.0}):
        with pytest.raises(ValueError):
            StepDecayLRScheduler(optimizer, **{"initial_lr": 1.0, **kwargs})


def test_xue_adam_trainer_is_found_by_nnunet(monkeypatch):
    from nnunet_sdm import trainers_path

    monkeypatch.setenv("nnUNet_extTrainer", trainers_path())
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    from nnunet_sdm.training.xue import nnUNetTrainerSDM_Xue2020
    from nnunet_sdm.training.xue_optim import nnUNetTrainerSDM_Xue2020Adam

    found = recursive_find_trainer_class_by_name("nnUNetTrainerSDM_Xue2020Adam")
    assert found.__name__ == "nnUNetTrainerSDM_Xue2020Adam" and issubclass(found, nnUNetTrainerSDM_Xue2020)
    assert nnUNetTrainerSDM_Xue2020Adam.adam_lr == 5e-4
    assert (nnUNetTrainerSDM_Xue2020Adam.lr_gamma, nnUNetTrainerSDM_Xue2020Adam.lr_step_epochs) == (0.8, 25)

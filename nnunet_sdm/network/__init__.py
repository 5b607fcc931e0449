"""Networks: the SDM head around nnU-Net's own networks."""

from nnunet_sdm.network.sdm_head import (
    SDM_LOGIT_SCALE,
    SDMHeadNetwork,
    SDMOutput,
    add_output_channels,
    load_warm_start,
    sdm_outputs,
    set_sdm_trunk_gradient_scale,
    unwrap,
)

__all__ = [
    "SDM_LOGIT_SCALE",
    "SDMHeadNetwork",
    "SDMOutput",
    "add_output_channels",
    "load_warm_start",
    "sdm_outputs",
    "set_sdm_trunk_gradient_scale",
    "unwrap",
]

"""MambaMixer layers: the selective SSM, the selective token and channel mixers, blocks and stacks, and the
hybrid stacks' attention and mixture-of-experts layers."""

from .attention import AttentionMixer, KVCache
from .axis import AlongAxis
from .block import MambaMixer, MambaMixerBlock
from .channel_wise import ChannelWiseSelectiveMixer
from .cross_scan import CrossScanSSM
from .hybrid import Hybrid
from .mixers import SelectiveChannelMixer, SelectiveTokenMixer
from .moe import MoEMLP, moe_aux_loss
from .selective_ssm import SelectiveSSM

__all__ = ["AlongAxis", "SelectiveSSM", "SelectiveTokenMixer", "SelectiveChannelMixer", "MambaMixerBlock",
           "MambaMixer", "CrossScanSSM", "ChannelWiseSelectiveMixer", "AttentionMixer", "KVCache", "MoEMLP",
           "moe_aux_loss", "Hybrid"]

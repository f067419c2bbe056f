"""MambaMixer layers: the selective SSM, the selective token and channel mixers, blocks and stacks."""

from .axis import AlongAxis
from .block import MambaMixer, MambaMixerBlock
from .channel_wise import ChannelWiseSelectiveMixer
from .cross_scan import CrossScanSSM
from .mixers import SelectiveChannelMixer, SelectiveTokenMixer
from .selective_ssm import SelectiveSSM

__all__ = ["AlongAxis", "SelectiveSSM", "SelectiveTokenMixer", "SelectiveChannelMixer", "MambaMixerBlock",
           "MambaMixer", "CrossScanSSM", "ChannelWiseSelectiveMixer"]

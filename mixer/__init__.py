"""MambaMixer layers: the selective SSM, the selective token and channel mixers, blocks and stacks."""

from .block import MambaMixer, MambaMixerBlock
from .mixers import SelectiveChannelMixer, SelectiveTokenMixer
from .selective_ssm import SelectiveSSM

__all__ = ["SelectiveSSM", "SelectiveTokenMixer", "SelectiveChannelMixer", "MambaMixerBlock", "MambaMixer"]

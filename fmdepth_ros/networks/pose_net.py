"""PoseNet: two frames stacked as 6 channels -> 6-DoF axis-angle + translation.

Layout of the official FeatDepth ``PoseEncoder``/``PoseDecoder``: ``encoder.*`` is a ResNet
with a 6-channel ``conv1`` and ``decoder.{reduce,conv1,conv2,conv3}.*`` is the pose head.
"""

from typing import Tuple

import torch
from torch import nn
import torch.nn.functional as F

from .depth_net import INPUT_MEAN, INPUT_STD, luma_rgb
from .resnet import build_resnet

#: the official code scales the raw pose output by this factor
POSE_SCALE = 0.01


class PoseDecoder(nn.Module):
    """1x1 squeeze (C->256) + ReLU, two 3x3 convs (256) + ReLU, 1x1 -> 6, spatial mean, x0.01."""

    def __init__(self, in_channels=512, translation_scale=POSE_SCALE):
        """Build the head for the encoder's last level with ``in_channels`` channels."""
        super().__init__()
        self.translation_scale = float(translation_scale)
        self.reduce = nn.Conv2d(in_channels, 256, 1)
        self.conv1 = nn.Conv2d(256, 256, 3, 1, 1)
        self.conv2 = nn.Conv2d(256, 256, 3, 1, 1)
        self.conv3 = nn.Conv2d(256, 6, 1)
        self.relu = nn.ReLU()

    def forward(self, feature) -> Tuple[torch.Tensor, torch.Tensor]:
        """[B,C,h,w] deepest feature -> (axisangle [B,3] rad, translation [B,3])."""
        out = self.relu(self.reduce(feature))
        out = self.relu(self.conv1(out))
        out = self.relu(self.conv2(out))
        out = self.conv3(out).mean(dim=(2, 3))
        return out[:, :3] * POSE_SCALE, out[:, 3:] * self.translation_scale


class PoseNet(nn.Module):
    """Relative camera motion between two frames.

    Both frames are resized (bilinear, as the official code does) to ``input_size`` = (H, W)
    — 192x640 by default whatever the training resolution — stacked as [earlier, later] and
    normalised as ``(x - 0.45) / 0.225``.

    Args:
        num_layers: ResNet depth (18 by default).
        input_size: (height, width) the frames are resized to.
        encoder_weights: optional torchvision-layout ResNet state dict; its 3-channel conv1
            is repeated for both frames and halved.
        translation_scale: raw translation output x this (official 0.01).
        grey_input: see only the luma of each frame (models trained on grey cameras).
    """

    def __init__(self, num_layers=18, input_size=(192, 640), encoder_weights=None,
                 translation_scale=POSE_SCALE, grey_input=False):
        """Build the 6-channel encoder and the pose head."""
        super().__init__()
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.grey_input = bool(grey_input)
        self.encoder = build_resnet(num_layers, 2, encoder_weights)
        self.decoder = PoseDecoder(self.encoder.num_ch_enc[-1], translation_scale)

    def _resize(self, image):
        if tuple(image.shape[-2:]) == self.input_size:
            return image
        return F.interpolate(image, self.input_size, mode='bilinear', align_corners=False)

    def forward(self, frame_a, frame_b) -> Tuple[torch.Tensor, torch.Tensor]:
        """Predict the motion parameters between two frames.

        Args:
            frame_a: [B,3,H,W] RGB in [0,1], the EARLIER frame.
            frame_b: [B,3,H,W] RGB in [0,1], the LATER frame.

        Returns:
            (axisangle [B,3] radians, translation [B,3] in depth units), already x0.01 scaled.
            As in the official code, ``T = pose_from_axisangle(axisangle, translation)``
            (T = [t]R) is ``T_later_earlier``: it maps points in the earlier camera frame into
            the later one (for target 0 and source +1: T_src_tgt; for source -1 invert it).
        """
        if self.grey_input:
            frame_a, frame_b = luma_rgb(frame_a), luma_rgb(frame_b)
        x = torch.cat((self._resize(frame_a), self._resize(frame_b)), 1)
        features = self.encoder((x - INPUT_MEAN) / INPUT_STD)
        return self.decoder(features[-1])


__all__ = ['PoseNet', 'PoseDecoder', 'POSE_SCALE']

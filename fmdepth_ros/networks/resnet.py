"""ResNet-18/34/50 encoders with torchvision's exact module names and N-image input.

Hand-written on purpose: the PyPI torchvision wheel does not import with the torch build this
project uses, and both the official FeatDepth checkpoints and torchvision's ImageNet files
use torchvision's parameter names (``conv1``, ``bn1``, ``layer1.0.conv1``,
``layer2.0.downsample.0`` ...). Keeping those names makes every such state dict load one to one.
The classifier head (``avgpool``/``fc``) is left out: it is unused by depth/pose networks and
unused parameters break DistributedDataParallel; ``fc.*`` keys are skipped when loading.
"""

from typing import List, Mapping, Optional

import torch
from torch import nn

from ..errors import WeightsError

#: blocks per stage for each supported depth
RESNET_LAYERS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3)}


def _conv3x3(in_planes, out_planes, stride=1):
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def _conv1x1(in_planes, out_planes, stride=1):
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (ResNet-18/34)."""

    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        """Build the block; ``downsample`` maps the input to the output shape when needed."""
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        """[B,Cin,H,W] -> [B,planes,H/stride,W/stride]."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (strided) -> 1x1 bottleneck with a residual connection (ResNet-50)."""

    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        """Build the block; the output has ``4 * planes`` channels."""
        super().__init__()
        self.conv1 = _conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        """[B,Cin,H,W] -> [B,4*planes,H/stride,W/stride]."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """ResNet trunk (no classifier) returning the 5 feature levels used by depth networks.

    Args:
        num_layers: 18, 34 or 50.
        num_input_images: images stacked along channels (conv1 takes ``3 * N`` channels).
    """

    def __init__(self, num_layers=18, num_input_images=1):
        """Build the trunk with torchvision's initialisation (Kaiming fan-out, BN 1/0)."""
        super().__init__()
        if num_layers not in RESNET_LAYERS:
            raise ValueError(f'ResNet depth must be one of {sorted(RESNET_LAYERS)}, '
                             f'got {num_layers}')
        self.num_layers = num_layers
        self.num_input_images = num_input_images
        block = Bottleneck if num_layers >= 50 else BasicBlock
        blocks = RESNET_LAYERS[num_layers]
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3 * num_input_images, 64, kernel_size=7, stride=2, padding=3,
                               bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, blocks[0])
        self.layer2 = self._make_layer(block, 128, blocks[1], stride=2)
        self.layer3 = self._make_layer(block, 256, blocks[2], stride=2)
        self.layer4 = self._make_layer(block, 512, blocks[3], stride=2)
        #: channels of the 5 feature levels (1/2, 1/4, 1/8, 1/16, 1/32 of the input)
        e = block.expansion
        self.num_ch_enc = [64, 64 * e, 128 * e, 256 * e, 512 * e]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, block, planes, count, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(_conv1x1(self.inplanes, planes * block.expansion, stride),
                                       nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, count)]
        return nn.Sequential(*layers)

    def forward(self, x) -> List[torch.Tensor]:
        """Return the 5 feature levels of an (already normalised) input.

        Args:
            x: [B, 3N, H, W].

        Returns:
            [relu(bn1(conv1)) [B,64,H/2,W/2], layer1 [B,C1,H/4,W/4], layer2 [B,C2,H/8,W/8],
            layer3 [B,C3,H/16,W/16], layer4 [B,C4,H/32,W/32]] with C = ``num_ch_enc``.
        """
        f0 = self.relu(self.bn1(self.conv1(x)))
        f1 = self.layer1(self.maxpool(f0))
        f2 = self.layer2(f1)
        f3 = self.layer3(f2)
        f4 = self.layer4(f3)
        return [f0, f1, f2, f3, f4]


def adapt_state_dict(encoder: ResNet, state_dict, source='state dict'):
    """Return ``state_dict`` ready for ``encoder.load_state_dict(strict=True)``.

    Drops the classifier (``fc.*``); when the encoder takes N stacked images and the file's
    ``conv1.weight`` takes 3 channels, repeats it N times and divides by N (official code).
    BatchNorm ``num_batches_tracked`` counters absent from the file (torchvision's ImageNet
    files predate them) start at 0, as in a fresh network; every other key must be there.
    """
    sd = {k: v for k, v in state_dict.items() if not k.startswith('fc.')}
    for key, value in encoder.state_dict().items():
        if key.endswith('.num_batches_tracked') and key not in sd:
            sd[key] = torch.zeros_like(value)
    w = sd.get('conv1.weight')
    n = encoder.num_input_images
    if w is not None and n > 1 and w.shape[1] == 3:
        sd['conv1.weight'] = torch.cat([w] * n, dim=1) / n
    expected = encoder.state_dict()
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    if missing or unexpected:
        raise WeightsError(f'{source}: not a ResNet-{encoder.num_layers} state dict '
                           f'(missing {missing[:3]}, unexpected {unexpected[:3]})')
    for k, v in expected.items():
        if tuple(sd[k].shape) != tuple(v.shape):
            raise WeightsError(f'{source}: {k} has shape {tuple(sd[k].shape)}, '
                               f'expected {tuple(v.shape)}')
    return sd


def load_encoder_weights(encoder: ResNet, state_dict: Optional[Mapping],
                         source: str = 'encoder weights') -> None:
    """Load a torchvision-layout ResNet state dict (e.g. ImageNet) into ``encoder``.

    ``state_dict`` None loads nothing. Files are read by
    :func:`fmdepth_ros.encoder_weights.read_encoder_weights` (networks read no files); raises
    ``WeightsError`` naming ``source`` when it is not a matching ResNet state dict.
    """
    if state_dict is None:
        return
    encoder.load_state_dict(adapt_state_dict(encoder, state_dict, source=source))


def build_resnet(num_layers=18, num_input_images=1, weights: Optional[Mapping] = None) -> ResNet:
    """Build a ResNet trunk and optionally load a torchvision-layout state dict into it."""
    encoder = ResNet(num_layers, num_input_images)
    load_encoder_weights(encoder, weights)
    return encoder


__all__ = ['ResNet', 'BasicBlock', 'Bottleneck', 'WeightsError', 'RESNET_LAYERS',
           'adapt_state_dict', 'load_encoder_weights', 'build_resnet']

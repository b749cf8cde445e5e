"""Depth decoders: the official FeatDepth CRP decoder and a Monodepth2-style U-Net decoder.

Module names mirror the released checkpoints so that their keys map one to one:

* ``FeatDepthDecoder``: FeatDepth ``mono_fm`` ``DepthDecoder.*`` keys, e.g.
  ``reduce4.conv.weight``, ``iconv3.conv.bias``, ``crp2.0.1_pointwise.conv.weight``,
  ``merge1.conv.weight``, ``disp4.0.conv.weight``.
* ``Monodepth2Decoder``: Monodepth2 ``depth.pth`` keys ``decoder.<i>.conv.conv.*`` (ELU conv
  blocks, i = 0..9) and ``decoder.<10+s>.conv.*`` (disparity convs for scale s = 0..3).
"""

from typing import Dict, List

import torch
from torch import nn
import torch.nn.functional as F


def upsample2x(x):
    """Nearest-neighbour 2x upsampling: [B,C,H,W] -> [B,C,2H,2W]."""
    return F.interpolate(x, scale_factor=2, mode='nearest')


class Conv3x3(nn.Module):
    """Reflection-padded 3x3 convolution with bias (keys ``conv.weight``, ``conv.bias``)."""

    def __init__(self, in_channels, out_channels):
        """Build the padded convolution."""
        super().__init__()
        self.pad = nn.ReflectionPad2d(1)
        self.conv = nn.Conv2d(int(in_channels), int(out_channels), 3)

    def forward(self, x):
        """[B,Cin,H,W] -> [B,Cout,H,W]."""
        return self.conv(self.pad(x))


class Conv1x1(nn.Module):
    """1x1 convolution without bias (key ``conv.weight``)."""

    def __init__(self, in_channels, out_channels):
        """Build the pointwise convolution."""
        super().__init__()
        self.conv = nn.Conv2d(int(in_channels), int(out_channels), 1, bias=False)

    def forward(self, x):
        """[B,Cin,H,W] -> [B,Cout,H,W]."""
        return self.conv(x)


class ConvBlock(nn.Module):
    """Reflection-padded 3x3 convolution followed by ELU (keys ``conv.conv.*``)."""

    def __init__(self, in_channels, out_channels):
        """Build the block."""
        super().__init__()
        self.conv = Conv3x3(in_channels, out_channels)
        self.nonlin = nn.ELU(inplace=True)

    def forward(self, x):
        """[B,Cin,H,W] -> [B,Cout,H,W]."""
        return self.nonlin(self.conv(x))


class ChainedResidualPooling(nn.Module):
    """RefineNet chained residual pooling: ``stages`` x (5x5/1 max-pool -> 1x1 conv), summed.

    The pointwise convs are named ``1_pointwise`` .. ``N_pointwise`` as in the official code.
    """

    def __init__(self, channels, stages=4):
        """Build ``stages`` pooling + pointwise-conv stages on ``channels`` channels."""
        super().__init__()
        self.stages = stages
        for i in range(stages):
            self.add_module(f'{i + 1}_pointwise', Conv1x1(channels, channels))
        self.maxpool = nn.MaxPool2d(kernel_size=5, stride=1, padding=2)

    def forward(self, x):
        """[B,C,H,W] -> [B,C,H,W]: x + sum of the chained pooled branches."""
        top = x
        for i in range(self.stages):
            top = getattr(self, f'{i + 1}_pointwise')(self.maxpool(top))
            x = x + top
        return x


class FeatDepthDecoder(nn.Module):
    """Official FeatDepth (``mono_fm``) decoder: 4 refine stages with CRP blocks.

    Stage k (4 -> 1) reduces encoder level k to 256 channels (512 at k = 4), concatenates the
    upsampled previous stage and its disparity, then 3x3 conv -> LeakyReLU -> CRP -> 3x3 merge
    -> LeakyReLU -> 2x nearest upsample -> 3x3 conv -> sigmoid. Level 0 is unused; dropout
    (p = 0.5, training only) is applied to levels 3 and 4 as in the official code.

    The layers and forward pass are the official ones; only the initialisation differs (see
    :meth:`init_weights`): it keeps the decoder from saturating at disparity 1 when it is
    trained from scratch. Loaded checkpoints overwrite it, so their outputs are unchanged.
    """

    #: factor on the PyTorch default init of the 3x3 disparity heads (see ``init_weights``)
    HEAD_INIT_SCALE = 1e-2

    def __init__(self, num_ch_enc, bottleneck=256, crp_stages=4, dropout=0.5):
        """Build the decoder for encoder channels ``num_ch_enc`` (5 levels)."""
        super().__init__()
        self.do = nn.Dropout(p=dropout)
        self.reduce4 = Conv1x1(num_ch_enc[4], 2 * bottleneck)
        self.iconv4 = Conv3x3(2 * bottleneck, bottleneck)
        for k in (3, 2, 1):
            setattr(self, f'reduce{k}', Conv1x1(num_ch_enc[k], bottleneck))
            setattr(self, f'iconv{k}', Conv3x3(2 * bottleneck + 1, bottleneck))
        for k in (4, 3, 2, 1):
            # a one-element Sequential, so keys read crp<k>.0.<i>_pointwise.conv.weight
            setattr(self, f'crp{k}', nn.Sequential(ChainedResidualPooling(bottleneck,
                                                                          crp_stages)))
            setattr(self, f'merge{k}', Conv3x3(bottleneck, bottleneck))
            setattr(self, f'disp{k}', nn.Sequential(Conv3x3(bottleneck, 1), nn.Sigmoid()))
        self.init_weights()

    def init_weights(self):
        """Initialise for training from scratch: small disparity heads, identity CRP blocks.

        With PyTorch's default init this wide decoder (256-channel 3x3 convs, fan-in 2304-4617)
        collapses under Adam: at the start the pose net's translation is ~0, so the photometric
        loss asks every pixel for a larger disparity (the depth / pose scale ambiguity); Adam
        moves every weight by ~lr along that common sign, which shifts all four pre-sigmoid
        logits by ~+0.6 per step at lr 1e-4 (about 25x the Monodepth2 decoder's scale-0 rate).
        They pass +7 within 10 steps; the sigmoid saturates at 1 (depth = min_depth), its
        gradient vanishes and Adam's second-moment memory keeps it there for good. The official
        code (ImageNet encoder, same default init) has no decoder init of its own.

        Here each disparity head's weights are scaled by ``HEAD_INIT_SCALE`` with zero bias
        (every disparity starts at ~0.5 and the gradients reaching the wide layers start ~100x
        smaller), and the chained-residual-pooling pointwise convs start at zero, so each CRP
        block is the identity at init (zero-init of residual branches, as in Goyal et al. 2017
        and Fixup). This gives the pose net time to pick up the scale before the disparities
        drift: from scratch on the synthetic corridor the decoder then learns at lr 1e-4 and
        3e-4. Layer names and shapes are unchanged; a loaded checkpoint replaces all of this.
        """
        with torch.no_grad():
            for k in (4, 3, 2, 1):
                head = getattr(self, f'disp{k}')[0].conv
                head.weight.mul_(self.HEAD_INIT_SCALE)
                head.bias.zero_()
                crp = getattr(self, f'crp{k}')[0]
                for i in range(crp.stages):
                    nn.init.zeros_(getattr(crp, f'{i + 1}_pointwise').conv.weight)

    def forward(self, features: List[torch.Tensor]) -> Dict[int, torch.Tensor]:
        """Decode encoder features into sigmoid disparities.

        Args:
            features: 5 levels [B,C_i,H/2^(i+1),W/2^(i+1)], i = 0..4.

        Returns:
            {s: disparity [B,1,H/2^(s+1),W/2^(s+1)] in (0,1)} for s = 0..3 (1/2 .. 1/16).
        """
        levels = list(features)
        levels[3] = self.do(levels[3])
        levels[4] = self.do(levels[4])
        outputs = {}
        x = None
        disp = None
        for k in (4, 3, 2, 1):
            y = getattr(self, f'reduce{k}')(levels[k])
            if x is not None:
                y = torch.cat((y, x, disp), 1)
            y = F.leaky_relu(getattr(self, f'iconv{k}')(y))
            y = getattr(self, f'crp{k}')(y)
            y = F.leaky_relu(getattr(self, f'merge{k}')(y))
            x = upsample2x(y)
            disp = getattr(self, f'disp{k}')(x)
            outputs[k - 1] = disp
        return outputs


class Monodepth2Decoder(nn.Module):
    """Monodepth2-style decoder: 5 upsampling stages with encoder skip connections.

    Stage i (4 -> 0): ELU conv to ``num_ch_dec[i]`` channels, 2x nearest upsample, concatenate
    encoder level i-1 (i > 0), ELU conv. Scales s = 0..3 get a 3x3 conv + sigmoid disparity.
    ``decoder`` holds the modules in Monodepth2's order (stage 4 first, each stage's two conv
    blocks in turn, then the 4 disparity convs) so ``depth.pth`` keys load unchanged.
    """

    num_ch_dec = (16, 32, 64, 128, 256)

    def __init__(self, num_ch_enc, scales=(0, 1, 2, 3)):
        """Build the decoder for encoder channels ``num_ch_enc`` (5 levels)."""
        super().__init__()
        self.scales = tuple(scales)
        modules = []
        for i in range(4, -1, -1):
            in_first = num_ch_enc[4] if i == 4 else self.num_ch_dec[i + 1]
            in_second = self.num_ch_dec[i] + (num_ch_enc[i - 1] if i > 0 else 0)
            modules.append(ConvBlock(in_first, self.num_ch_dec[i]))
            modules.append(ConvBlock(in_second, self.num_ch_dec[i]))
        modules += [Conv3x3(self.num_ch_dec[s], 1) for s in self.scales]
        self.decoder = nn.ModuleList(modules)
        self.sigmoid = nn.Sigmoid()

    def forward(self, features: List[torch.Tensor]) -> Dict[int, torch.Tensor]:
        """Decode encoder features into sigmoid disparities.

        Args:
            features: 5 levels [B,C_i,H/2^(i+1),W/2^(i+1)], i = 0..4.

        Returns:
            {s: disparity [B,1,H/2^s,W/2^s] in (0,1)} for s = 0..3 (1 .. 1/8).
        """
        outputs = {}
        x = features[4]
        for stage, i in enumerate(range(4, -1, -1)):
            x = upsample2x(self.decoder[2 * stage](x))
            if i > 0:
                x = torch.cat((x, features[i - 1]), 1)
            x = self.decoder[2 * stage + 1](x)
            if i in self.scales:
                head = self.decoder[10 + self.scales.index(i)]
                outputs[i] = self.sigmoid(head(x))
        return outputs


__all__ = ['FeatDepthDecoder', 'Monodepth2Decoder', 'ChainedResidualPooling', 'Conv3x3',
           'Conv1x1', 'ConvBlock', 'upsample2x']

"""FeatureNet: the FeatDepth autoencoder whose encoder provides the feature-metric features.

Layout of the official ``mono_autoencoder``: ``encoder.*`` is a ResNet (NO input
normalisation) and ``decoder.*`` holds ``upconv5..1``/``iconv5..1`` (ELU conv blocks) and
``disp4..1`` (the RGB reconstruction heads; the official code calls them "disp").
"""

from typing import Dict, List

import torch
from torch import nn

from .depth_decoders import Conv3x3, ConvBlock, upsample2x
from .resnet import build_resnet


class ReconstructionDecoder(nn.Module):
    """5 blocks [3x3 conv + ELU -> 2x nearest up -> 3x3 conv + ELU], 256..16 channels, no skips.

    Only the deepest encoder level is used. Sigmoid RGB reconstructions come from the blocks at
    1/8, 1/4, 1/2 and full resolution (scales 3..0).
    """

    num_ch_dec = (16, 32, 64, 128, 256)

    def __init__(self, in_channels):
        """Build the decoder for a deepest encoder level with ``in_channels`` channels."""
        super().__init__()
        ch = self.num_ch_dec
        for k in range(5, 0, -1):       # block k outputs ch[k-1] channels
            cin = in_channels if k == 5 else ch[k]
            setattr(self, f'upconv{k}', ConvBlock(cin, ch[k - 1]))
            setattr(self, f'iconv{k}', ConvBlock(ch[k - 1], ch[k - 1]))
        for k in range(4, 0, -1):       # head k reads block k's output
            setattr(self, f'disp{k}', Conv3x3(ch[k - 1], 3))
        self.sigmoid = nn.Sigmoid()

    def forward(self, deepest) -> Dict[int, torch.Tensor]:
        """[B,C,H/32,W/32] -> {s: RGB reconstruction [B,3,H/2^s,W/2^s] in (0,1)}, s = 0..3."""
        x = deepest
        outputs = {}
        for k in range(5, 0, -1):
            x = getattr(self, f'iconv{k}')(upsample2x(getattr(self, f'upconv{k}')(x)))
            if k <= 4:
                outputs[k - 1] = self.sigmoid(getattr(self, f'disp{k}')(x))
        return outputs


class FeatureNet(nn.Module):
    """Autoencoder: ResNet encoder (features for the feature-metric loss) + RGB decoder.

    Args:
        num_layers: ResNet depth of the encoder (50 in the paper).
        encoder_weights: optional torchvision-layout ResNet state dict (ImageNet init).
    """

    def __init__(self, num_layers=50, encoder_weights=None):
        """Build encoder and reconstruction decoder."""
        super().__init__()
        self.encoder = build_resnet(num_layers, 1, encoder_weights)
        self.decoder = ReconstructionDecoder(self.encoder.num_ch_enc[-1])

    def encode(self, image) -> List[torch.Tensor]:
        """[B,3,H,W] RGB in [0,1] (not normalised) -> 5 feature levels.

        Level 0 is [B,64,H/2,W/2] (conv1+BN+ReLU, the feature-metric feature); level i is
        [B,C_i,H/2^(i+1),W/2^(i+1)].
        """
        return self.encoder(image)

    def forward(self, image) -> Dict:
        """Encode and reconstruct.

        Returns:
            {'features': the 5 levels of ``encode``,
             ('recon', s): [B,3,H/2^s,W/2^s] sigmoid RGB for s = 0..3}.
        """
        features = self.encode(image)
        out = {'features': features}
        for s, recon in self.decoder(features[-1]).items():
            out[('recon', s)] = recon
        return out


__all__ = ['FeatureNet', 'ReconstructionDecoder']

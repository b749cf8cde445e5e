"""FeatDepth networks: DepthNet, PoseNet, FeatureNet and their ResNet encoders."""

from .depth_decoders import FeatDepthDecoder, Monodepth2Decoder
from .depth_net import DepthNet, disp_to_depth
from .feature_net import FeatureNet
from .pose_net import PoseNet
from .resnet import load_encoder_weights, ResNet, WeightsError

__all__ = ['DepthNet', 'disp_to_depth', 'PoseNet', 'FeatureNet', 'FeatDepthDecoder',
           'Monodepth2Decoder', 'ResNet', 'WeightsError', 'load_encoder_weights']

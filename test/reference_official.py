"""Test helper: minimal re-creations of the released FeatDepth and Monodepth2 module trees.

Written independently of ``fmdepth_ros.networks`` (from reading the official code), so that a
state dict built here carries THEIR key names and shapes, and their forward passes give the
reference outputs our converted networks must reproduce:

* FeatDepth ``mono_fm`` (MIT, github.com/sconlyshootery/FeatDepth): ``DepthEncoder``,
  ``DepthDecoder`` (CRP), ``PoseEncoder``, ``PoseDecoder``, ``extractor``; the autoencoder file
  holds ``Encoder``/``Decoder``. Depth is predicted at 1/2..1/16, pose inputs are resized to
  192x640, depth/pose inputs are normalised as (x - 0.45) / 0.225, the autoencoder's are not.
* Monodepth2 (re-created from its documented behaviour; none of its code is copied): the
  ``encoder.pth``/``depth.pth``/``pose_encoder.pth``/``pose.pth`` trees, the pose decoder
  predicting 2 transforms (12 channels) of which the first is used.

Also ``model_factory(cfg)``: the real ``FeatDepthModel`` once ``fmdepth_ros.model`` exists,
else a stand-in holding the three networks under the same attribute names.
"""

from fmdepth_ros.networks import DepthNet, FeatureNet, PoseNet
import torch
from torch import nn
import torch.nn.functional as F


# --------------------------------------------------------------------------- model factory
class StandInModel(nn.Module):
    """The three networks of a FeatDepthModel under its attribute names (tests only)."""

    def __init__(self, cfg):
        """Build depth, pose and feature networks from ``cfg.model``."""
        super().__init__()
        m = cfg.model
        self.cfg = cfg
        self.depth_net = DepthNet(m.depth_layers, m.depth_decoder, m.min_depth, m.max_depth)
        self.pose_net = PoseNet(m.pose_layers, (m.pose_height, m.pose_width))
        self.feature_net = FeatureNet(m.feature_layers)


def model_factory(cfg):
    """Return ``FeatDepthModel(cfg)`` when ``fmdepth_ros.model`` exists, else a stand-in."""
    try:
        from fmdepth_ros.model import FeatDepthModel
    except ModuleNotFoundError as exc:
        if exc.name != 'fmdepth_ros.model':
            raise
        return StandInModel(cfg)
    return FeatDepthModel(cfg)


def randomize_(module, seed=0):
    """Fill every parameter and buffer with random values (BN variances stay positive)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if not t.is_floating_point():
                continue
            if name.endswith('running_var'):
                t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
            elif name.endswith(('running_mean', '.bias')):
                t.copy_(torch.randn(t.shape, generator=gen) * 0.1)
            elif t.dim() == 1:   # BN weight
                t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
            else:
                # fan-in scaled, below He gain: keeps the (residual, CRP-summed) activations
                # moderate so the sigmoid outputs are not saturated
                fan_in = t[0].numel()
                t.copy_(torch.randn(t.shape, generator=gen) * 0.6 / fan_in ** 0.5)
    return module


# --------------------------------------------------------------------------- official ResNet
class _Basic(nn.Module):
    expansion = 1

    def __init__(self, cin, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        residual = x if self.downsample is None else self.downsample(x)
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(out + residual)


class _Bottle(nn.Module):
    expansion = 4

    def __init__(self, cin, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + residual)


class OfficialResNet(nn.Module):
    """torchvision-style ResNet including the classifier (``avgpool``, ``fc``) as released."""

    def __init__(self, num_layers, num_input_images=1):
        """Build ResNet-18/34/50 taking ``3 * num_input_images`` channels."""
        super().__init__()
        block = _Bottle if num_layers == 50 else _Basic
        counts = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3]}[num_layers]
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3 * num_input_images, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        for i, (planes, n) in enumerate(zip([64, 128, 256, 512], counts)):
            stride = 1 if i == 0 else 2
            down = None
            if stride != 1 or self.inplanes != planes * block.expansion:
                down = nn.Sequential(
                    nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                    nn.BatchNorm2d(planes * block.expansion))
            blocks = [block(self.inplanes, planes, stride, down)]
            self.inplanes = planes * block.expansion
            blocks += [block(self.inplanes, planes) for _ in range(n - 1)]
            setattr(self, f'layer{i + 1}', nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, 1000)
        e = block.expansion
        self.num_ch_enc = [64, 64 * e, 128 * e, 256 * e, 512 * e]


class EncoderWrapper(nn.Module):
    """``DepthEncoder`` / ``PoseEncoder`` / ``Encoder`` / Monodepth2 ``ResnetEncoder``."""

    def __init__(self, num_layers, num_input_images=1, normalise=True):
        """Wrap a ResNet as attribute ``encoder``."""
        super().__init__()
        self.encoder = OfficialResNet(num_layers, num_input_images)
        self.normalise = normalise
        self.num_ch_enc = self.encoder.num_ch_enc

    def forward(self, x):
        """Return the 5 levels (after conv1+bn1+relu, layer1..layer4)."""
        if self.normalise:
            x = (x - 0.45) / 0.225
        e = self.encoder
        feats = [e.relu(e.bn1(e.conv1(x)))]
        feats.append(e.layer1(e.maxpool(feats[-1])))
        for layer in (e.layer2, e.layer3, e.layer4):
            feats.append(layer(feats[-1]))
        return feats


# --------------------------------------------------------------------------- FeatDepth layers
class _Conv3x3(nn.Module):

    def __init__(self, cin, cout):
        super().__init__()
        self.pad = nn.ReflectionPad2d(1)
        self.conv = nn.Conv2d(int(cin), int(cout), 3)

    def forward(self, x):
        return self.conv(self.pad(x))


class _Conv1x1(nn.Module):

    def __init__(self, cin, cout):
        super().__init__()
        self.conv = nn.Conv2d(int(cin), int(cout), 1, 1, bias=False)

    def forward(self, x):
        return self.conv(x)


class _ConvBlock(nn.Module):

    def __init__(self, cin, cout):
        super().__init__()
        self.conv = _Conv3x3(cin, cout)
        self.nonlin = nn.ELU(inplace=True)

    def forward(self, x):
        return self.nonlin(self.conv(x))


class _CRPBlock(nn.Module):

    def __init__(self, planes, n_stages=4):
        super().__init__()
        for i in range(n_stages):
            setattr(self, f'{i + 1}_pointwise', _Conv1x1(planes, planes))
        self.n_stages = n_stages
        self.maxpool = nn.MaxPool2d(5, 1, 2)

    def forward(self, x):
        top = x
        for i in range(self.n_stages):
            top = self.maxpool(top)
            top = getattr(self, f'{i + 1}_pointwise')(top)
            x = top + x
        return x


def _up(x):
    return F.interpolate(x, scale_factor=2, mode='nearest')


class OfficialDepthDecoder(nn.Module):
    """FeatDepth ``mono_fm`` DepthDecoder, following its forward line by line."""

    def __init__(self, num_ch_enc):
        """Build reduce/iconv/crp/merge/disp 4..1 as the official code names them."""
        super().__init__()
        b = 256
        self.do = nn.Dropout(p=0.5)
        self.reduce4 = _Conv1x1(num_ch_enc[4], 512)
        self.reduce3 = _Conv1x1(num_ch_enc[3], b)
        self.reduce2 = _Conv1x1(num_ch_enc[2], b)
        self.reduce1 = _Conv1x1(num_ch_enc[1], b)
        self.iconv4 = _Conv3x3(512, b)
        self.iconv3 = _Conv3x3(b * 2 + 1, b)
        self.iconv2 = _Conv3x3(b * 2 + 1, b)
        self.iconv1 = _Conv3x3(b * 2 + 1, b)
        for k in (4, 3, 2, 1):
            setattr(self, f'crp{k}', nn.Sequential(_CRPBlock(b, 4)))
        for k in (4, 3, 2, 1):
            setattr(self, f'merge{k}', _Conv3x3(b, b))
        for k in (4, 3, 2, 1):
            setattr(self, f'disp{k}', nn.Sequential(_Conv3x3(b, 1), nn.Sigmoid()))

    def forward(self, feats):
        """Return {('disp', 0, s): disparity} for s = 0..3 (1/2 .. 1/16 resolution)."""
        _, l1, l2, l3, l4 = feats
        l4 = self.do(l4)
        l3 = self.do(l3)
        x4 = _up(F.leaky_relu(self.merge4(self.crp4(F.leaky_relu(self.iconv4(
            self.reduce4(l4)))))))
        disp4 = self.disp4(x4)
        x3 = torch.cat((self.reduce3(l3), x4, disp4), 1)
        x3 = _up(F.leaky_relu(self.merge3(self.crp3(F.leaky_relu(self.iconv3(x3))))))
        disp3 = self.disp3(x3)
        x2 = torch.cat((self.reduce2(l2), x3, disp3), 1)
        x2 = _up(F.leaky_relu(self.merge2(self.crp2(F.leaky_relu(self.iconv2(x2))))))
        disp2 = self.disp2(x2)
        x1 = torch.cat((self.reduce1(l1), x2, disp2), 1)
        x1 = _up(F.leaky_relu(self.merge1(self.crp1(F.leaky_relu(self.iconv1(x1))))))
        disp1 = self.disp1(x1)
        return {('disp', 0, 3): disp4, ('disp', 0, 2): disp3, ('disp', 0, 1): disp2,
                ('disp', 0, 0): disp1}


class OfficialPoseDecoder(nn.Module):
    """FeatDepth ``mono_fm`` PoseDecoder (reduce, conv1..3, x0.01)."""

    def __init__(self, num_ch_enc):
        """Build the head."""
        super().__init__()
        self.reduce = nn.Conv2d(num_ch_enc[-1], 256, 1)
        self.conv1 = nn.Conv2d(256, 256, 3, 1, 1)
        self.conv2 = nn.Conv2d(256, 256, 3, 1, 1)
        self.conv3 = nn.Conv2d(256, 6, 1)
        self.relu = nn.ReLU()

    def forward(self, feats):
        """Return (axisangle [B,1,1,3], translation [B,1,1,3])."""
        out = self.relu(self.reduce(feats[-1]))
        out = self.relu(self.conv1(out))
        out = self.relu(self.conv2(out))
        out = self.conv3(out).mean(3).mean(2)
        out = 0.01 * out.view(-1, 1, 1, 6)
        return out[..., :3], out[..., 3:]


class OfficialAutoDecoder(nn.Module):
    """FeatDepth ``mono_autoencoder`` Decoder (upconv5..1, iconv5..1, disp4..1)."""

    def __init__(self, num_ch_enc):
        """Build the blocks with the official names."""
        super().__init__()
        d = [16, 32, 64, 128, 256]
        self.upconv5 = _ConvBlock(num_ch_enc[4], d[4])
        self.upconv4 = _ConvBlock(d[4], d[3])
        self.upconv3 = _ConvBlock(d[3], d[2])
        self.upconv2 = _ConvBlock(d[2], d[1])
        self.upconv1 = _ConvBlock(d[1], d[0])
        self.iconv5 = _ConvBlock(d[4], d[4])
        self.iconv4 = _ConvBlock(d[3], d[3])
        self.iconv3 = _ConvBlock(d[2], d[2])
        self.iconv2 = _ConvBlock(d[1], d[1])
        self.iconv1 = _ConvBlock(d[0], d[0])
        self.disp4 = _Conv3x3(d[3], 3)
        self.disp3 = _Conv3x3(d[2], 3)
        self.disp2 = _Conv3x3(d[1], 3)
        self.disp1 = _Conv3x3(d[0], 3)
        self.sigmoid = nn.Sigmoid()

    def forward(self, feats):
        """Return {('disp', 0, s): RGB [B,3,H/2^s,W/2^s]} for s = 0..3."""
        i5 = self.iconv5(_up(self.upconv5(feats[4])))
        i4 = self.iconv4(_up(self.upconv4(i5)))
        i3 = self.iconv3(_up(self.upconv3(i4)))
        i2 = self.iconv2(_up(self.upconv2(i3)))
        i1 = self.iconv1(_up(self.upconv1(i2)))
        return {('disp', 0, 3): self.sigmoid(self.disp4(i4)),
                ('disp', 0, 2): self.sigmoid(self.disp3(i3)),
                ('disp', 0, 1): self.sigmoid(self.disp2(i2)),
                ('disp', 0, 0): self.sigmoid(self.disp1(i1))}


class OfficialMonoFM(nn.Module):
    """The ``mono_fm`` module tree whose ``state_dict()`` is the released checkpoint's."""

    def __init__(self, depth_layers=50, pose_layers=18):
        """Build DepthEncoder/Decoder, PoseEncoder/Decoder and the extractor."""
        super().__init__()
        self.DepthEncoder = EncoderWrapper(depth_layers)
        self.DepthDecoder = OfficialDepthDecoder(self.DepthEncoder.num_ch_enc)
        self.PoseEncoder = EncoderWrapper(pose_layers, num_input_images=2)
        self.PoseDecoder = OfficialPoseDecoder(self.PoseEncoder.num_ch_enc)
        self.extractor = EncoderWrapper(depth_layers, normalise=False)

    def depth(self, image):
        """Disparities of ``image`` [B,3,H,W] in [0,1]."""
        return self.DepthDecoder(self.DepthEncoder(image))

    def pose(self, earlier, later):
        """(axisangle [B,3], translation [B,3]) with the official 192x640 resize."""
        feats = [F.interpolate(x, [192, 640], mode='bilinear', align_corners=False)
                 for x in (earlier, later)]
        axisangle, translation = self.PoseDecoder(self.PoseEncoder(torch.cat(feats, 1)))
        return axisangle[:, 0, 0], translation[:, 0, 0]


class OfficialAutoencoder(nn.Module):
    """The ``autoencoder`` module tree (``Encoder``, ``Decoder``) of the autoencoder file."""

    def __init__(self, num_layers=50):
        """Build Encoder (no normalisation) and Decoder."""
        super().__init__()
        self.Encoder = EncoderWrapper(num_layers, normalise=False)
        self.Decoder = OfficialAutoDecoder(self.Encoder.num_ch_enc)

    def forward(self, image):
        """Return (features, reconstructions)."""
        feats = self.Encoder(image)
        return feats, self.Decoder(feats)


def mmcv_checkpoint(module):
    """Wrap a module's state dict the way mmcv's ``save_checkpoint`` stores it."""
    return {'meta': {'mmcv_version': '0.4.4', 'epoch': 40, 'iter': 1000},
            'state_dict': module.state_dict(), 'optimizer': {'state': {}, 'param_groups': []}}


# --------------------------------------------------------------------------- Monodepth2 trees
class Md2DepthDecoder(nn.Module):
    """Monodepth2-layout depth decoder: ``decoder`` list of 10 ELU blocks + 4 disparity convs.

    List order: for stage i = 4..0, the conv before upsampling then the conv after the skip
    concatenation; then the disparity convs of scales 0..3. Disparity of scale i comes from
    stage i (resolution 1/2^i).
    """

    def __init__(self, num_ch_enc):
        """Build the list."""
        super().__init__()
        dec = [16, 32, 64, 128, 256]
        mods = []
        for i in (4, 3, 2, 1, 0):
            mods.append(_ConvBlock(num_ch_enc[4] if i == 4 else dec[i + 1], dec[i]))
            mods.append(_ConvBlock(dec[i] + (num_ch_enc[i - 1] if i else 0), dec[i]))
        mods += [_Conv3x3(dec[s], 1) for s in range(4)]
        self.decoder = nn.ModuleList(mods)

    def forward(self, feats):
        """Return {('disp', s): [B,1,H/2^s,W/2^s]}."""
        out = {}
        x = feats[4]
        for n, i in enumerate((4, 3, 2, 1, 0)):
            x = [_up(self.decoder[2 * n](x))]
            if i:
                x.append(feats[i - 1])
            x = self.decoder[2 * n + 1](torch.cat(x, 1))
            if i < 4:
                out[('disp', i)] = torch.sigmoid(self.decoder[10 + i](x))
        return out


class Md2PoseDecoder(nn.Module):
    """Monodepth2 "separate_resnet" pose decoder: ``net`` = squeeze, 3 convs; 2 transforms."""

    def __init__(self, num_ch_enc):
        """Build the list (1 input feature, 2 frames to predict for -> 12 outputs)."""
        super().__init__()
        self.net = nn.ModuleList([nn.Conv2d(num_ch_enc[-1], 256, 1),
                                  nn.Conv2d(256, 256, 3, 1, 1),
                                  nn.Conv2d(256, 256, 3, 1, 1),
                                  nn.Conv2d(256, 12, 1)])

    def forward(self, feats):
        """Return (axisangle [B,2,1,3], translation [B,2,1,3])."""
        out = F.relu(self.net[0](feats[-1]))
        out = F.relu(self.net[1](out))
        out = F.relu(self.net[2](out))
        out = 0.01 * self.net[3](out).mean(3).mean(2).view(-1, 2, 1, 6)
        return out[..., :3], out[..., 3:]


class Monodepth2Models:
    """The four Monodepth2 networks; ``files()`` gives the released .pth dicts."""

    def __init__(self, num_layers=18, height=64, width=192, use_stereo=False):
        """Build the encoder, depth decoder, pose encoder and pose decoder."""
        self.height, self.width, self.use_stereo = height, width, use_stereo
        self.encoder = EncoderWrapper(num_layers)
        self.depth = Md2DepthDecoder(self.encoder.num_ch_enc)
        self.pose_encoder = EncoderWrapper(num_layers, num_input_images=2)
        self.pose = Md2PoseDecoder(self.pose_encoder.num_ch_enc)
        for i, m in enumerate((self.encoder, self.depth, self.pose_encoder, self.pose)):
            randomize_(m, seed=10 + i).eval()

    def files(self):
        """Return {'encoder.pth': ..., 'depth.pth': ..., 'pose_encoder.pth': ..., 'pose.pth'}."""
        enc = dict(self.encoder.state_dict())
        enc.update(height=self.height, width=self.width, use_stereo=self.use_stereo)
        return {'encoder.pth': enc, 'depth.pth': self.depth.state_dict(),
                'pose_encoder.pth': self.pose_encoder.state_dict(),
                'pose.pth': self.pose.state_dict()}

    def predict_depth(self, image):
        """Disparities {('disp', s)} of ``image`` [B,3,H,W] in [0,1]."""
        return self.depth(self.encoder(image))

    def predict_pose(self, earlier, later):
        """(axisangle [B,3], translation [B,3]) of the first predicted transform."""
        axisangle, translation = self.pose(self.pose_encoder(torch.cat((earlier, later), 1)))
        return axisangle[:, 0, 0], translation[:, 0, 0]

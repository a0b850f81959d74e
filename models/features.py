"""The feature API every zoo model shares: ``forward_stages``, ``forward_features``, ``forward_head``, and
RepDistiller's ``forward(x, is_feat=False, preact=False)`` built from them in one place.

A model subclasses ``FeatureNet``, names the child that maps the pooled vector to logits in ``head_name``,
and writes only ``forward_stages(x, preact=False)``, which returns the list ``[f0, ..., fK, m]``:

* ``f0 .. fK`` are the maps ``forward(x, is_feat=True, preact=preact)`` reports (stem output, then one per
  stage; pre-ReLU where the model has a ReLU to take them before and ``preact`` is set);
* ``m`` is the map ``forward_head`` average-pools into the classifier, after whatever head layers follow
  the last stage (WRN's and HCGNet's BN-ReLU, ShuffleNetV2's 1x1 conv-BN-ReLU, MobileNetV2's 1x1 conv to
  1280). ``m`` never depends on ``preact``; where nothing stands between the last stage and the pooling and
  ``preact`` is off, it is the same tensor as ``fK``.

So ``forward_stages(x)[:-1] + [forward_head(forward_stages(x)[-1], pre_logits=True)]`` is exactly the
``feats`` list of ``forward(x, is_feat=True)``, and ``forward_head(forward_stages(x)[-1])`` its logits.
The names follow timm's, so that they surprise nobody who knows it: ``forward_features(x)`` is the one map
``m`` (timm's unpooled final features) and ``forward_head(forward_features(x))`` the logits. The stage maps
come under another name, ``forward_stages``, because timm's ``forward_intermediates`` answers a wider
question (chosen indices, norm, output format, a ``(final, intermediates)`` pair) with another shape.
``m`` is kept separate from ``fK`` because the two differ for several families (WRN's fK is the last
block's output before the final BN, for one), and methods that act on the pooled map (NORM) need ``m``.
"""
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from helper.errors import KDZooError


class FeatureNet(nn.Module):
    """Base of the zoo models: the pooling head and the ``is_feat``/``preact`` forward, written once.

    Adds no parameters or buffers, so the state-dict names of the subclasses are those of their own modules.
    """
    head_name = 'fc'  # the child applied to the pooled vector (the whole of it: ImageNet MobileNetV2's dropout too)
    # The families whose head is checked to be the global average of ``m`` into one ``nn.Linear`` (with
    # whatever dropout precedes it), so that the classifier applied to the average of a region of ``m``
    # (``region_logits``) or as a 1x1 conv on ``m`` (``class_activation_maps``) means what SDD and CAT-KD read.
    classifies_regions = False

    def forward_stages(self, x, preact=False):
        """``[f0, ..., fK, m]``: the reported stage maps and the map that is pooled (see the module docstring)."""
        raise NotImplementedError

    def forward_features(self, x):
        """``m``, the map ``forward_head`` pools into the classifier (timm's ``forward_features``)."""
        return self.forward_stages(x)[-1]

    def forward_head(self, x, pre_logits=False):
        """Global average pooling of the map ``x`` into a vector, then the classifier; with ``pre_logits`` the
        pooled vector itself (``feats[-1]`` of ``forward(..., is_feat=True)``)."""
        pooled = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return pooled if pre_logits else self.classify(pooled)

    def get_bn_before_relu(self):
        """The BatchNorm in front of each stage's final ReLU (OFD's margins read them); a family without
        such BNs (the ShuffleNets) refuses in one line."""
        raise KDZooError(f"{type(self).__name__} has no BN right before its stage ReLUs, so it cannot be the "
                         f"teacher for this distiller; choose another teacher")

    def get_classifier(self):
        """The ``nn.Linear`` that makes the logits (distillers reuse or fold it); a head that is more than
        that one layer (the MobileNetV2s' ``classifier`` Sequential) overrides this."""
        return getattr(self, self.head_name)

    def classify(self, pooled):
        """Logits of an already pooled feature vector."""
        return getattr(self, self.head_name)(pooled)

    def forward(self, x, is_feat=False, preact=False):
        """Logits, or ``(feats, logits)`` with ``feats = [f0, ..., fK, pooled]`` when ``is_feat``: RepDistiller's
        contract, which the distillers read."""
        _, feats, logits = run_features(self, x, preact)
        return (feats, logits) if is_feat else logits


def init_weights(net, linear=None, conv_bias=False):
    """RepDistiller's initialisation of its CIFAR models, in module order: He-normal (fan_out) convolutions
    (their bias zeroed with ``conv_bias``), BatchNorm weight 1 and bias 0; ``linear``: 'normal' gives
    N(0, 0.01) weights and a zero bias, 'zero_bias' zeroes the bias alone, None leaves PyTorch's."""
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
            if conv_bias:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and linear is not None:
            if linear == 'normal':
                nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


def run_features(net, x, preact=False):
    """``(maps, feats, logits)`` of one pass: ``forward_stages``'s maps, ``forward``'s ``is_feat`` list and the
    logits. The one place the tail of ``forward`` is written."""
    maps = net.forward_stages(x, preact=preact)
    pooled = net.forward_head(maps[-1], pre_logits=True)
    return maps, maps[:-1] + [pooled], net.classify(pooled)


def stage_maps(f0, stages, preact=False):
    """``[f0, f1, ..., fK, fK]`` for stages whose last block returns ``(output, pre-ReLU output)`` (the CIFAR
    ResNets and ShuffleNets): each stage feeds the next with its output and reports its pre-ReLU output
    instead when ``preact``; the last stage's output closes the list as the map to pool."""
    maps, x = [f0], f0
    for stage in stages:
        x, pre = stage(x)
        maps.append(pre if preact else x)
    return maps + [x]


def check_classifies_regions(net, name, method):
    """One line refusing a network whose family does not opt into ``classifies_regions``."""
    if not (isinstance(net, FeatureNet) and net.classifies_regions):
        raise KDZooError(f"{method} applies {name}'s classifier to regions of its last feature map, which only the "
                         f"ResNet, WRN, VGG, MobileNet and ShuffleNet families support; pick a network of one")


def region_logits(net, fmap, scales, grid=4):
    """SDD's multi-scale logits: ``fmap`` (B, C, H, W) average-pooled to a ``grid`` x ``grid`` map, which each
    scale s pools on to s x s regions, and ``net``'s classifier applied to every region's mean feature.
    Returns (B, classes, regions), the regions in the order of ``scales`` and row-major within a scale (SDD's
    ``SPP``, which pools 4x4 first and the 2x2 and 1x1 from it; when ``grid`` divides H and W each region is
    the plain mean of its part of ``fmap``)."""
    base = F.adaptive_avg_pool2d(fmap, grid)
    regions = torch.cat([F.adaptive_avg_pool2d(base, s).flatten(2) for s in scales], dim=2)
    batch, channels, count = regions.shape
    logits = net.classify(regions.permute(2, 0, 1).reshape(count * batch, channels))
    return logits.reshape(count, batch, -1).permute(1, 2, 0)


def class_activation_maps(net, fmap):
    """CAT-KD's class activation maps: ``net``'s classifier weight (classes x C) applied as a bias-free 1x1
    convolution to ``fmap``, (B, classes, H, W); their spatial mean is the logits less the bias."""
    weight = net.get_classifier().weight
    return F.conv2d(fmap, weight.reshape(*weight.shape, 1, 1).to(fmap.dtype))


@dataclass
class NetOutput:
    """What one network produced for a batch."""
    logits: torch.Tensor
    feats: Optional[List[torch.Tensor]] = None  # [f0, ..., fK, pooled]; pre-ReLU maps if preact
    pooled_map: Optional[torch.Tensor] = None  # the map the classifier pools (forward_features(x)), if asked
    # The same network on other views of the batch, by view name (NTCE-KD's teacher on 'strong').
    views: Dict[str, 'NetOutput'] = field(default_factory=dict)


def run_network(net, images, needs_feats, preact, needs_pooled_map=False):
    """``net``'s logits for ``images``, with its feature list when ``needs_feats`` and the map it pools into
    its classifier when ``needs_pooled_map`` (one pass through the feature API: the same feats and logits)."""
    if needs_pooled_map:
        maps, feats, logits = run_features(net, images, preact)
        return NetOutput(logits, feats, maps[-1])
    if needs_feats:
        feats, logits = net(images, is_feat=True, preact=preact)
        return NetOutput(logits, feats)
    return NetOutput(net(images))

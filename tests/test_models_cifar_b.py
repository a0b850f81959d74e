"""CIFAR MobileNetV2 and ShuffleNet v1/v2 against numbers taken from the reference repos.

Every literal below (feature shapes, parameter counts, state_dict key counts and digests) was obtained by
running RepDistiller's models/mobilenetv2.py, models/ShuffleNetv1.py, models/ShuffleNetv2.py (and SimKD's
mobile_half_double and ShuffleV2_1_5 / ShuffleV2_0_5) on a 2x3x32x32 input. Loading a reference state_dict
into these models strictly and comparing outputs was done once by hand (max difference 7e-7).
"""
import hashlib

import pytest
import torch
import torch.nn as nn

from helper.errors import KDZooError
from models.mobilenetv2 import MobileNetV2, MobileNetV2_1_0
from models.ShuffleNetv1 import ShuffleV1, channel_shuffle as shuffle_v1
from models.ShuffleNetv2 import ShuffleV2, ShuffleV2_0_5, ShuffleV2_1_5, channel_shuffle as shuffle_v2

# What a family's models share: the length of get_feat_modules() and of get_bn_before_relu() (None: the
# model refuses it), and the sides of the feature maps f0..fK on a 32x32 input.
MOBILENET = dict(feat_modules=2, bn_before_relu=4, sides=[16, 16, 8, 4, 2])
SHUFFLENET = dict(feat_modules=5, bn_before_relu=None, sides=[32, 16, 8, 4])


def spec(ctor, family, channels, params_100, params_10, num_keys, digest):
    """One model's expected numbers; ``channels``: those of f0..fK, then the pooled feature's width."""
    *maps, pooled = channels
    return dict(ctor=ctor, feats=[(c, side, side) for c, side in zip(maps, family['sides'], strict=True)] + [(pooled,)],
                params={100: params_100, 10: params_10}, num_keys=num_keys, digest=digest,
                feat_modules=family['feat_modules'], bn_before_relu=family['bn_before_relu'])


# constructor, family, channels of f0..fK and the pooled width, parameters at 100 and 10 classes, state_dict
# keys, digest
SPECS = {row[0].__name__: spec(*row) for row in [
    (MobileNetV2, MOBILENET, [16, 12, 16, 48, 160, 1280], 812836, 697546, 320, '10e9036e17013c38'),
    (MobileNetV2_1_0, MOBILENET, [32, 24, 32, 96, 320, 1280], 2353060, 2237770, 320, 'e6ee6c471a211281'),
    (ShuffleV1, SHUFFLENET, [24, 240, 480, 960, 960], 949258, 862768, 296, 'eb3bcbc847930cce'),
    (ShuffleV2, SHUFFLENET, [24, 116, 232, 464, 1024], 1355528, 1263278, 338, 'b7e2c3e764687767'),
    (ShuffleV2_1_5, SHUFFLENET, [24, 176, 352, 704, 1024], 2580548, 2488298, 338, '15f6b4fbe25801b5'),
    (ShuffleV2_0_5, SHUFFLENET, [24, 48, 96, 192, 1024], 443716, 351466, 338, 'b87bccef411e4134'),
]}
NAMES = list(SPECS)


def build(name, num_classes=100, seed=0):
    torch.manual_seed(seed)
    return SPECS[name]['ctor'](num_classes=num_classes).eval()


def images(seed=1):
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def shape_digest(state_dict):
    text = '\n'.join(f'{k}:{tuple(v.shape)}' for k, v in sorted(state_dict.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@pytest.mark.parametrize('num_classes', [100, 10])
@pytest.mark.parametrize('name', NAMES)
def test_logits_and_parameter_count(name, num_classes):
    model = build(name, num_classes)
    with torch.no_grad():
        assert model(images()).shape == (2, num_classes)
    assert sum(p.numel() for p in model.parameters()) == SPECS[name]['params'][num_classes]


@pytest.mark.parametrize('name', NAMES)
def test_default_is_100_classes(name):
    assert SPECS[name]['ctor']().get_classifier().out_features == 100


@pytest.mark.parametrize('name', NAMES)
def test_features_match_reference_shapes_and_feed_the_classifier(name):
    model = build(name)
    with torch.no_grad():
        feats, logits = model(images(), is_feat=True)
        plain_logits = model(images())
    assert [tuple(f.shape) for f in feats] == [(2,) + s for s in SPECS[name]['feats']]
    assert torch.equal(logits, plain_logits)
    assert torch.allclose(model.get_classifier()(feats[-1]), logits, atol=1e-6)


@pytest.mark.parametrize('name', ['ShuffleV1', 'ShuffleV2', 'ShuffleV2_1_5', 'ShuffleV2_0_5'])
def test_shufflenet_preact_features_are_the_stage_outputs_before_relu(name):
    model = build(name)
    with torch.no_grad():
        post, logits = model(images(), is_feat=True)
        pre, pre_logits = model(images(), is_feat=True, preact=True)
    assert torch.equal(logits, pre_logits)
    assert torch.equal(pre[0], post[0]) and torch.equal(pre[-1], post[-1])
    for p, q in zip(pre[1:4], post[1:4]):
        assert p.shape == q.shape
        assert p.min() < 0 <= q.min()
        if name == 'ShuffleV1':
            assert torch.equal(torch.relu(p), q)
        else:
            # ShuffleNetV2 reports its pre-activation before the final channel shuffle, as RepDistiller does.
            assert torch.equal(shuffle_v2(torch.relu(p)), q)


@pytest.mark.parametrize('name', ['MobileNetV2', 'MobileNetV2_1_0'])
def test_mobilenet_ignores_preact(name):
    model = build(name)
    with torch.no_grad():
        post, _ = model(images(), is_feat=True)
        pre, _ = model(images(), is_feat=True, preact=True)
    assert all(torch.equal(p, q) for p, q in zip(pre, post))
    assert post[1].min() < 0  # block outputs are linear, so there is nothing "pre" to report


@pytest.mark.parametrize('name', NAMES)
def test_state_dict_names_and_shapes_match_reference(name):
    state = build(name).state_dict()
    assert len(state) == SPECS[name]['num_keys']
    assert shape_digest(state) == SPECS[name]['digest']


def test_state_dict_spot_checks():
    mobile = MobileNetV2().state_dict()
    assert mobile['conv1.0.weight'].shape == (16, 3, 3, 3)
    assert mobile['blocks.1.1.conv.3.weight'].shape == (72, 1, 3, 3)  # 12 channels x expansion 6, depthwise
    assert mobile['classifier.0.weight'].shape == (100, 1280)
    v1 = ShuffleV1().state_dict()
    assert v1['layer1.0.conv1.weight'].shape == (54, 24, 1, 1)  # ungrouped after the stem
    assert v1['layer2.0.conv1.weight'].shape == (60, 80, 1, 1)  # 240 inputs in 3 groups
    assert v1['layer1.0.conv3.weight'].shape == (216, 18, 1, 1)  # 240 - 24 concatenated shortcut channels
    v2 = ShuffleV2().state_dict()
    assert v2['layer1.0.conv2.weight'].shape == (58, 24, 1, 1)
    assert v2['layer3.3.bn3.running_var'].shape == (232,)
    assert v2['linear.weight'].shape == (100, 1024)


@pytest.mark.parametrize('name', NAMES)
def test_strict_round_trip_into_fresh_instance(name):
    source, target = build(name, seed=0), build(name, seed=1)
    for m in source.modules():  # non-default BN statistics, so the buffers must travel too
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    with torch.no_grad():
        expected = source(images(), is_feat=True, preact=True)
        assert not torch.equal(target(images()), expected[1])
        target.load_state_dict(source.state_dict(), strict=True)
        got = target(images(), is_feat=True, preact=True)
    assert all(torch.equal(a, b) for a, b in zip(got[0], expected[0]))
    assert torch.equal(got[1], expected[1])


@pytest.mark.parametrize('name', NAMES)
def test_get_classifier(name):
    model = build(name, num_classes=10)
    classifier = model.get_classifier()
    assert isinstance(classifier, nn.Linear)
    assert classifier.out_features == 10
    assert classifier.in_features == SPECS[name]['feats'][-1][0]


@pytest.mark.parametrize('name', NAMES)
def test_feat_modules_and_bn_before_relu(name):
    model = build(name)
    spec = SPECS[name]
    assert isinstance(model.get_feat_modules(), nn.ModuleList)
    assert len(model.get_feat_modules()) == spec['feat_modules']
    if spec['bn_before_relu'] is None:
        with pytest.raises(KDZooError):
            model.get_bn_before_relu()
        return
    bns = model.get_bn_before_relu()
    assert len(bns) == spec['bn_before_relu']
    assert all(isinstance(bn, nn.BatchNorm2d) for bn in bns)
    # They close the stages reported as f1..f4, so their widths are those features' channels.
    assert [bn.num_features for bn in bns] == [s[0] for s in spec['feats'][1:5]]


@pytest.mark.parametrize('name', NAMES)
def test_channels_last_input_gives_same_logits(name):
    model = build(name)
    with torch.no_grad():
        expected = model(images())
        model = model.to(memory_format=torch.channels_last)
        got = model(images().contiguous(memory_format=torch.channels_last))
    assert torch.allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize('name', NAMES)
def test_builds_on_meta_device(name):
    # The registry guesses architectures from checkpoints by building models on the meta device.
    with torch.device('meta'):
        model = SPECS[name]['ctor'](num_classes=100)
    assert shape_digest(model.state_dict()) == SPECS[name]['digest']


def test_channel_shuffle_interleaves_groups():
    x = torch.arange(6.).view(1, 6, 1, 1)
    assert shuffle_v1(x, 3).flatten().tolist() == [0, 2, 4, 1, 3, 5]
    assert shuffle_v2(x).flatten().tolist() == [0, 3, 1, 4, 2, 5]

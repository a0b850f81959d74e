"""CIFAR ResNets, ResNet50, WRNs and VGGs against the reference implementations.

The literals in REFERENCE (parameter count, number of state_dict entries, a hash of the sorted
``name:shape`` pairs, and feature shapes) were obtained by running RepDistiller's ``models/resnet.py``,
``resnetv2.py``, ``wrn.py`` and ``vgg.py`` (SimKD's ``models/resnet.py`` for the names only SimKD has)
with ``num_classes=100`` on a 2x3x32x32 input.
"""
import hashlib

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from models import resnet, resnetv2, vgg, wrn

NARROW = [(16, 32, 32), (16, 32, 32), (32, 16, 16), (64, 8, 8), (64,)]
DOUBLE = [(16, 32, 32), (32, 32, 32), (64, 16, 16), (128, 8, 8), (128,)]
QUAD = [(32, 32, 32), (64, 32, 32), (128, 16, 16), (256, 8, 8), (256,)]
WRN_X4 = [(16, 32, 32), (64, 32, 32), (128, 16, 16), (256, 8, 8), (256,)]
VGG_SHAPES = [(64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4), (512, 4, 4), (512,)]
RESNET50 = [(64, 32, 32), (256, 32, 32), (512, 16, 16), (1024, 8, 8), (2048, 4, 4), (2048,)]

# name: (constructor, parameters, state_dict entries, key/shape hash, feature shapes,
#        len(get_feat_modules()), len(get_bn_before_relu()))
REFERENCE = {
    'resnet8': (resnet.resnet8, 83892, 56, 'b6d2eadfad18008d', NARROW, 6, 3),
    'resnet14': (resnet.resnet14, 181108, 92, '999217769620e667', NARROW, 6, 3),
    'resnet20': (resnet.resnet20, 278324, 128, '0a9025647a326dab', NARROW, 6, 3),
    'resnet32': (resnet.resnet32, 472756, 200, 'b8cfac513088b578', NARROW, 6, 3),
    'resnet38': (resnet.resnet38, 569972, 236, '1e98a053d545ba4b', NARROW, 6, 3),
    'resnet44': (resnet.resnet44, 667188, 272, 'd5641b5fde73c0d3', NARROW, 6, 3),
    'resnet56': (resnet.resnet56, 861620, 344, 'e6090c1d7307fa4c', NARROW, 6, 3),
    'resnet110': (resnet.resnet110, 1736564, 668, '7716774969eee020', NARROW, 6, 3),
    'resnet116': (resnet.resnet116, 1833780, 704, '6b19df0195b2b455', NARROW, 6, 3),
    'resnet14x2': (resnet.resnet14x2, 703732, 98, '28664bed83685d21', DOUBLE, 6, 3),
    'resnet38x2': (resnet.resnet38x2, 2255604, 242, 'e4e453dc63547262', DOUBLE, 6, 3),
    'resnet110x2': (resnet.resnet110x2, 6911220, 674, '7c50e1b76da2e1ca', DOUBLE, 6, 3),
    'resnet8x4': (resnet.resnet8x4, 1233540, 62, '90122c3760456ead', QUAD, 6, 3),
    'resnet14x4': (resnet.resnet14x4, 2783620, 98, '23b9e261e9660311', QUAD, 6, 3),
    'resnet32x4': (resnet.resnet32x4, 7433860, 206, '38c29dd2cd69edba', QUAD, 6, 3),
    'resnet38x4': (resnet.resnet38x4, 8983940, 242, '93465d257630fa16', QUAD, 6, 3),
    'ResNet50': (resnetv2.ResNet50, 23705252, 320, 'dab24d72f42d9156', RESNET50, 6, 4),
    'wrn_16_1': (wrn.wrn_16_1, 180916, 82, 'cd190fb848d1ee16', NARROW, 4, 3),
    'wrn_16_2': (wrn.wrn_16_2, 703284, 83, 'a7537d4c84362453', DOUBLE, 4, 3),
    'wrn_40_1': (wrn.wrn_40_1, 569780, 226, '1ae5b60f5271503c', NARROW, 4, 3),
    'wrn_40_2': (wrn.wrn_40_2, 2255156, 227, 'fdedbf77f001b7e3', DOUBLE, 4, 3),
    'wrn_28_4': (wrn.wrn_28_4, 5872180, 155, 'df65a6012cf2465d', WRN_X4, 4, 3),
    'vgg8': (vgg.vgg8, 3965028, 37, 'd4778bfb5f2f085e', VGG_SHAPES, 10, 4),
    'vgg11': (vgg.vgg11, 9277284, 58, '62eb15e38b59f953', VGG_SHAPES, 10, 4),
    'vgg13': (vgg.vgg13, 9462180, 72, '8f3cbf9bb607f2e5', VGG_SHAPES, 10, 4),
    'vgg16': (vgg.vgg16, 14774436, 93, 'ba6fe0234ea2ebde', VGG_SHAPES, 10, 4),
    'vgg19': (vgg.vgg19, 20086692, 114, 'e78458bd0d0b23fc', VGG_SHAPES, 10, 4),
}
# A few parameter names and shapes, written out, so a hash mismatch has something readable next to it.
SPOT_CHECKS = {
    'resnet8x4': {'conv1.weight': (32, 3, 3, 3), 'layer1.0.downsample.0.weight': (64, 32, 1, 1),
                  'fc.weight': (100, 256)},
    'resnet110x2': {'layer3.17.bn2.running_var': (128,), 'fc.bias': (100,)},
    'ResNet50': {'layer4.0.shortcut.0.weight': (2048, 1024, 1, 1), 'layer4.2.bn3.weight': (2048,),
                 'linear.weight': (100, 2048)},
    'wrn_40_2': {'block1.layer.0.convShortcut.weight': (32, 16, 1, 1), 'block3.layer.5.conv2.weight': (128, 128, 3, 3),
                 'bn1.num_batches_tracked': (), 'fc.weight': (100, 128)},
    'vgg13': {'block0.3.weight': (64, 64, 3, 3), 'block4.4.running_mean': (512,), 'classifier.weight': (100, 512)},
}
WRN_NAMES = {'wrn_16_1', 'wrn_16_2', 'wrn_40_1', 'wrn_40_2', 'wrn_28_4'}
SMALL = ['resnet8', 'resnet14x2', 'wrn_16_1', 'vgg8']


def key_hash(state_dict):
    text = ';'.join(f'{k}:{tuple(v.shape)}' for k, v in sorted(state_dict.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def param_count(model):
    return sum(p.numel() for p in model.parameters())


def images(n=2, size=32):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope='module', params=sorted(REFERENCE))
def run(request):
    """Each model forwarded twice only: once for features, and once with preact=True in a fresh
    instance that received its weights through a strict state_dict round trip."""
    name = request.param
    ctor = REFERENCE[name][0]
    torch.manual_seed(0)
    model = ctor().eval()
    fresh = ctor(num_classes=100).eval()
    fresh.load_state_dict(model.state_dict(), strict=True)
    x = images()
    with torch.no_grad():
        feats, logits = model(x, is_feat=True)
        pre_feats, pre_logits = fresh(x, is_feat=True, preact=True)
    return name, model, fresh, feats, logits, pre_feats, pre_logits


def test_parameters_and_state_dict_match_reference(run):
    name, model = run[0], run[1]
    _, params, num_keys, digest, _, _, _ = REFERENCE[name]
    state = model.state_dict()
    assert param_count(model) == params
    assert len(state) == num_keys
    assert key_hash(state) == digest
    for key, shape in SPOT_CHECKS.get(name, {}).items():
        assert tuple(state[key].shape) == shape


def test_feature_and_logit_shapes(run):
    name, _, _, feats, logits, pre_feats, pre_logits = run
    expected = [(2,) + shape for shape in REFERENCE[name][4]]
    assert [tuple(f.shape) for f in feats] == expected
    assert [tuple(f.shape) for f in pre_feats] == expected
    assert logits.shape == (2, 100)


def test_round_trip_gives_identical_outputs(run):
    # The fresh instance ran with preact=True, which must not change the logits either.
    logits, pre_logits = run[4], run[6]
    assert torch.equal(logits, pre_logits)


def test_pooled_feature_feeds_the_classifier(run):
    name, model, _, feats, logits, pre_feats, _ = run
    classifier = model.get_classifier()
    assert isinstance(classifier, nn.Linear)
    assert classifier.out_features == 100
    assert classifier.in_features == feats[-1].shape[1]
    # WRN's last stage output still goes through the head's BN and ReLU before pooling.
    last_map = F.relu(pre_feats[-2]) if name in WRN_NAMES else feats[-2]
    torch.testing.assert_close(feats[-1], last_map.mean(dim=(2, 3)))
    torch.testing.assert_close(logits, classifier(feats[-1]))


def test_preact_swaps_in_pre_relu_stage_outputs(run):
    name, _, fresh, feats, _, pre_feats, _ = run
    torch.testing.assert_close(pre_feats[0], feats[0], rtol=0, atol=0)
    torch.testing.assert_close(pre_feats[-1], feats[-1], rtol=0, atol=0)
    bns = fresh.get_bn_before_relu()
    for i in range(1, len(feats) - 1):
        assert (pre_feats[i] < 0).any()
        assert not torch.equal(pre_feats[i], feats[i])
        if name in WRN_NAMES:
            # A WRN stage output is a residual sum; its pre-activation is the next BN applied to it.
            torch.testing.assert_close(pre_feats[i], bns[i - 1](feats[i]))
        else:
            assert feats[i].min() >= 0
            assert torch.equal(F.relu(pre_feats[i]), feats[i])


def test_feat_modules_and_bns_before_relu(run):
    name, model, _, feats = run[:4]
    feat_modules = model.get_feat_modules()
    bns = model.get_bn_before_relu()
    assert isinstance(feat_modules, nn.ModuleList)
    assert len(feat_modules) == REFERENCE[name][5]
    assert len(bns) == REFERENCE[name][6]
    assert all(isinstance(bn, nn.BatchNorm2d) for bn in bns)
    # Each BN sits right before the ReLU of one stage output, so its width is that stage's.
    assert [bn.num_features for bn in bns] == [f.shape[1] for f in feats[1:-1]]


@pytest.mark.parametrize('name', sorted(REFERENCE))
def test_ten_classes_changes_only_the_classifier(name):
    ctor, params = REFERENCE[name][:2]
    model = ctor(num_classes=10)
    in_features = model.get_classifier().in_features
    assert model.get_classifier().out_features == 10
    assert param_count(model) == params - 90 * (in_features + 1)


@pytest.mark.parametrize('name', SMALL)
def test_plain_forward_returns_logits_and_accepts_channels_last(name):
    model = REFERENCE[name][0](num_classes=10).eval()
    x = images()
    with torch.no_grad():
        logits = model(x)
        _, feat_logits = model(x, is_feat=True)
        cl_logits = model(x.to(memory_format=torch.channels_last))
    assert logits.shape == (2, 10)
    assert torch.equal(logits, feat_logits)
    torch.testing.assert_close(cl_logits, logits)


def test_bottleneck_resnet_matches_reference():
    # Reference: RepDistiller's ResNet(29, [16, 16, 32, 64], 'bottleneck', num_classes=100).
    model = resnet.ResNet(29, [16, 16, 32, 64], 'bottleneck', num_classes=100).eval()
    assert param_count(model) == 336244
    assert key_hash(model.state_dict()) == '1ffdf1bdb06fe88f'
    with torch.no_grad():
        feats, _ = model(images(), is_feat=True)
        pre_feats, _ = model(images(), is_feat=True, preact=True)
    assert [tuple(f.shape[1:]) for f in feats] == [(16, 32, 32), (64, 32, 32), (128, 16, 16), (256, 8, 8), (256,)]
    assert [bn.num_features for bn in model.get_bn_before_relu()] == [64, 128, 256]
    assert torch.equal(F.relu(pre_feats[3]), feats[3])


@pytest.mark.parametrize('build', [lambda: resnet.ResNet(21, [16, 16, 32, 64], 'bottleneck'),
                                   lambda: resnet.ResNet(20, [16, 16, 32, 64], 'resblock'),
                                   lambda: wrn.WideResNet(20, 2)])
def test_impossible_depth_or_block_is_refused(build):
    with pytest.raises(ValueError):
        build()


def test_wrn_preact_in_training_leaves_running_stats_as_a_plain_forward_does():
    plain = wrn.wrn_16_1().train()
    with_preact = wrn.wrn_16_1().train()
    with_preact.load_state_dict(plain.state_dict())
    x = images(4)
    plain(x)
    feats, _ = with_preact(x, is_feat=True, preact=True)
    for key, value in plain.state_dict().items():
        assert torch.equal(value, with_preact.state_dict()[key]), key
    # In training mode the BN normalises with the batch's own statistics: each channel has mean 0.
    bn = with_preact.get_bn_before_relu()[0]
    torch.testing.assert_close(feats[1].mean(dim=(0, 2, 3)), bn.bias.detach(), atol=1e-5, rtol=0)


def test_vgg_pools_before_block4_only_for_64_pixel_inputs():
    model = vgg.vgg8(num_classes=10).eval()
    with torch.no_grad():
        feats, logits = model(images(1, size=64), is_feat=True)
    assert [tuple(f.shape[1:]) for f in feats] == [(64, 64, 64), (128, 32, 32), (256, 16, 16), (512, 8, 8),
                                                   (512, 4, 4), (512,)]
    assert logits.shape == (1, 10)

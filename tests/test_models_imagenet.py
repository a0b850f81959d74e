"""ImageNet models: the forward/feature contract, parameter counts and checkpoint layouts.

The layout fingerprints, key counts and parameter counts below were computed from the reference model
definitions themselves (torchvision's resnet18/34/50, mobilenet_v2 and shufflenet_v2_x1_0 as copied into
SimKD, mdistiller's MobileNetV1, NORM's resnet50_4S without its NORM-only layer21/22/41/42 modules),
so a match means checkpoints saved by those models load here with strict=True.
"""
import hashlib
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from helper.errors import KDZooError
from models.imagenet import imagenet_model_dict
from models.imagenet.shufflenetv2 import channel_shuffle

# channels and strides of f0..fK, pooled width, parameters at 1000 and 10 classes, state-dict keys,
# and the sha256 (first 16 hex digits) of "key:shape;..." over the 1000-class state dict: a row per model
COLUMNS = ('channels', 'strides', 'pooled', 'params', 'params_10', 'keys', 'layout')
EXPECTED = {name: dict(zip(COLUMNS, row, strict=True)) for name, *row in [
    ('ResNet18', [64, 64, 128, 256, 512], [4, 4, 8, 16, 32], 512, 11689512, 11181642, 122, '9343d600debe782c'),
    ('ResNet34', [64, 64, 128, 256, 512], [4, 4, 8, 16, 32], 512, 21797672, 21289802, 218, 'e0fcac3e9a1e5aef'),
    ('ResNet50', [64, 256, 512, 1024, 2048], [4, 4, 8, 16, 32], 2048, 25557032, 23528522, 320, '1d8fc517bd891ca1'),
    ('ResNet50_quarter', [64, 64, 128, 256, 512], [4, 4, 8, 16, 32], 512, 2000744, 1492874, 314, 'aed53b2d8291f3e5'),
    ('MobileNetV1', [64, 128, 256, 512, 1024], [2, 4, 8, 16, 32], 1024, 4231976, 3217226, 164, '735401b430049768'),
    ('MobileNetV2_Imagenet', [32, 24, 32, 96, 320], [2, 4, 8, 16, 32], 1280, 3504872, 2236682, 314,
     'cdc170cbfd0a243b'),
    ('ShuffleV2_Imagenet', [24, 116, 232, 1024], [4, 8, 16, 32], 1024, 2278604, 1263854, 338, '6ca04bd17d0ca4b2'),
]}

# a few parameter names and shapes of each reference checkpoint, spelled out
SPOT_CHECKS = {
    'ResNet18': {'conv1.weight': (64, 3, 7, 7), 'layer1.0.conv1.weight': (64, 64, 3, 3),
                 'layer2.0.downsample.0.weight': (128, 64, 1, 1), 'layer4.1.bn2.running_var': (512,),
                 'fc.weight': (1000, 512)},
    'ResNet34': {'layer3.5.conv2.weight': (256, 256, 3, 3), 'layer4.0.downsample.1.num_batches_tracked': (),
                 'fc.bias': (1000,)},
    'ResNet50': {'layer1.0.downsample.0.weight': (256, 64, 1, 1), 'layer2.0.conv2.weight': (128, 128, 3, 3),
                 'layer4.2.conv3.weight': (2048, 512, 1, 1), 'fc.weight': (1000, 2048)},
    'ResNet50_quarter': {'layer1.0.conv1.weight': (16, 64, 1, 1), 'layer2.0.downsample.0.weight': (128, 64, 1, 1),
                         'layer4.2.conv3.weight': (512, 128, 1, 1), 'fc.weight': (1000, 512)},
    'MobileNetV1': {'model.0.0.weight': (32, 3, 3, 3), 'model.1.0.weight': (32, 1, 3, 3),
                    'model.13.3.weight': (1024, 1024, 1, 1), 'fc.weight': (1000, 1024)},
    'MobileNetV2_Imagenet': {'features.0.0.weight': (32, 3, 3, 3), 'features.1.conv.0.0.weight': (32, 1, 3, 3),
                             'features.2.conv.0.0.weight': (96, 16, 1, 1), 'features.18.0.weight': (1280, 320, 1, 1),
                             'classifier.1.weight': (1000, 1280)},
    'ShuffleV2_Imagenet': {'conv1.0.weight': (24, 3, 3, 3), 'stage2.0.branch1.0.weight': (24, 1, 3, 3),
                           'stage2.1.branch2.0.weight': (58, 58, 1, 1), 'conv5.0.weight': (1024, 464, 1, 1),
                           'fc.weight': (1000, 1024)},
}

# models whose stage outputs end in a ReLU, so preact=True gives different tensors
HAS_PREACT = {'ResNet18', 'ResNet34', 'ResNet50', 'ResNet50_quarter', 'MobileNetV1'}
RESNETS = ['ResNet18', 'ResNet34', 'ResNet50', 'ResNet50_quarter']
SIZE = 64


def layout_fingerprint(state_dict):
    text = ';'.join(f'{key}:{tuple(value.shape)}' for key, value in state_dict.items())
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def build_on_meta(name, num_classes):
    with torch.device('meta'):  # shapes only, which is all the layout tests need
        return imagenet_model_dict[name](num_classes=num_classes)


@pytest.fixture(scope='module', params=list(EXPECTED))
def run(request):
    """A 10-class model with BN statistics moved off their defaults, in eval mode, and its outputs on one batch."""
    torch.manual_seed(0)
    model = imagenet_model_dict[request.param](num_classes=10)
    with torch.no_grad():
        model.train()(torch.randn(4, 3, SIZE, SIZE))
    model.eval()
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        logits = model(x)
        feats, feat_logits = model(x, is_feat=True)
        preact_feats, preact_logits = model(x, is_feat=True, preact=True)
    return SimpleNamespace(name=request.param, model=model, x=x, logits=logits, feats=feats,
                           feat_logits=feat_logits, preact_feats=preact_feats, preact_logits=preact_logits)


def test_registry_names():
    assert set(imagenet_model_dict) == {'ResNet18', 'ResNet34', 'ResNet50', 'ResNet50_quarter', 'MobileNetV1',
                                        'MobileNetV2_Imagenet', 'ShuffleV2_Imagenet', *SIMKD_WIDE}


# ---------------------------------------------------------------- the SimKD repo's wider ResNets

def reference_resnet_layout(block, layers, num_classes=1000, groups=1, width_per_group=64):
    """(key, shape) of every state-dict entry of the SimKD repo's ``ResNet`` (torchvision's, plus its
    ``multiplier``: BasicBlock stages widened by width_per_group // 64), written from that code's rules."""
    def bn(c, name):
        return [(f'{name}.{k}', (c,)) for k in ('weight', 'bias', 'running_mean', 'running_var')] \
            + [(f'{name}.num_batches_tracked', ())]

    multiplier = width_per_group // 64 if block == 'basic' and width_per_group != 64 else 1
    expansion = 1 if block == 'basic' else 4
    out = [('conv1.weight', (64, 3, 7, 7)), *bn(64, 'bn1')]
    inplanes = 64
    for stage, (planes, count) in enumerate(zip((64, 128, 256, 512), layers), 1):
        planes *= multiplier
        for index in range(count):
            name = f'layer{stage}.{index}'
            if block == 'basic':
                out += [(f'{name}.conv1.weight', (planes, inplanes, 3, 3)), *bn(planes, f'{name}.bn1'),
                        (f'{name}.conv2.weight', (planes, planes, 3, 3)), *bn(planes, f'{name}.bn2')]
            else:
                width = int(planes * (width_per_group / 64.)) * groups
                out += [(f'{name}.conv1.weight', (width, inplanes, 1, 1)), *bn(width, f'{name}.bn1'),
                        (f'{name}.conv2.weight', (width, width // groups, 3, 3)), *bn(width, f'{name}.bn2'),
                        (f'{name}.conv3.weight', (planes * 4, width, 1, 1)), *bn(planes * 4, f'{name}.bn3')]
            stride = 2 if stage > 1 and index == 0 else 1
            if index == 0 and (stride != 1 or inplanes != planes * expansion):
                out += [(f'{name}.downsample.0.weight', (planes * expansion, inplanes, 1, 1)),
                        *bn(planes * expansion, f'{name}.downsample.1')]
            inplanes = planes * expansion
    return out + [('fc.weight', (num_classes, inplanes)), ('fc.bias', (num_classes,))]


# name: (reference arguments: its models/__init__.py entry's constructor), feature channels, pooled width
SIMKD_WIDE = {
    'ResNet10x2': (('basic', [1, 1, 1, 1], 1000, 1, 128), [64, 128, 256, 512, 1024], 1024),   # wide_resnet10_2
    'ResNet18x2': (('basic', [2, 2, 2, 2], 1000, 1, 128), [64, 128, 256, 512, 1024], 1024),   # wide_resnet18_2
    'ResNet34x2': (('basic', [3, 4, 6, 3], 1000, 1, 128), [64, 128, 256, 512, 1024], 1024),   # wide_resnet34_2
    'wrn_50_2': (('bottleneck', [3, 4, 6, 3], 1000, 1, 128), [64, 256, 512, 1024, 2048], 2048),  # wide_resnet50_2
    'resnext50_32x4d': (('bottleneck', [3, 4, 6, 3], 1000, 32, 4), [64, 256, 512, 1024, 2048], 2048),
}


@pytest.mark.parametrize('name', list(SIMKD_WIDE))
def test_simkd_wide_resnets_have_the_reference_layout(name):
    reference, _, _ = SIMKD_WIDE[name]
    model = build_on_meta(name, 1000)
    layout = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    assert layout == reference_resnet_layout(*reference)


def test_torchvision_counts_of_the_wide_and_grouped_resnet50s():
    # torchvision's published parameter counts of wide_resnet50_2 and resnext50_32x4d
    assert sum(p.numel() for p in build_on_meta('wrn_50_2', 1000).parameters()) == 68883240
    assert sum(p.numel() for p in build_on_meta('resnext50_32x4d', 1000).parameters()) == 25028904


@pytest.mark.parametrize('name', ['ResNet10x2', 'resnext50_32x4d'])
def test_simkd_wide_resnets_feature_contract(name):
    _, channels, pooled = SIMKD_WIDE[name]
    torch.manual_seed(0)
    model = imagenet_model_dict[name](num_classes=10).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        feats, logits = model(x, is_feat=True)
        preact, _ = model(x, is_feat=True, preact=True)
    assert [f.shape[1] for f in feats[:-1]] == channels and feats[-1].shape == (1, pooled)
    assert [64 // f.shape[-1] for f in feats[:-1]] == [4, 4, 8, 16, 32]
    assert torch.equal(logits, model(x)) and logits.shape == (1, 10)
    assert all(torch.equal(F.relu(p), f) for p, f in zip(preact[:-1], feats[:-1]))
    assert [bn.num_features for bn in model.get_bn_before_relu()] == channels[1:]


@pytest.mark.parametrize('name', list(EXPECTED))
def test_parameter_counts_and_layout(name):
    expected = EXPECTED[name]
    model = build_on_meta(name, 1000)
    state = model.state_dict()
    assert sum(p.numel() for p in model.parameters()) == expected['params']
    assert sum(p.numel() for p in build_on_meta(name, 10).parameters()) == expected['params_10']
    assert len(state) == expected['keys']
    assert layout_fingerprint(state) == expected['layout']
    for key, shape in SPOT_CHECKS[name].items():
        assert tuple(state[key].shape) == shape, key


def test_quarter_resnet50_has_no_layer1_downsample():
    # at a quarter width layer1 maps 64 channels to 64, so (as in NORM) it needs no projection shortcut
    state = build_on_meta('ResNet50_quarter', 1000).state_dict()
    assert not any(key.startswith('layer1.0.downsample') for key in state)
    assert 'layer2.0.downsample.0.weight' in state


def test_logits_shape_and_feats_contract(run):
    expected = EXPECTED[run.name]
    assert run.logits.shape == (2, 10)
    assert torch.equal(run.feat_logits, run.logits)
    assert torch.equal(run.preact_logits, run.logits)
    maps, pooled = run.feats[:-1], run.feats[-1]
    assert [f.shape[1] for f in maps] == expected['channels']
    assert [SIZE // f.shape[-1] for f in maps] == expected['strides']
    assert pooled.shape == (2, expected['pooled'])
    assert run.model.get_classifier().in_features == expected['pooled']


def test_preact_feats(run):
    assert [f.shape for f in run.preact_feats] == [f.shape for f in run.feats]
    assert torch.equal(run.preact_feats[-1], run.feats[-1])
    for pre, post in zip(run.preact_feats[:-1], run.feats[:-1]):
        if run.name in HAS_PREACT:
            assert (pre < 0).any()
            assert torch.equal(F.relu(pre), post)
        else:
            assert torch.equal(pre, post)


def test_classifier_makes_the_logits(run):
    classifier = run.model.get_classifier()
    assert isinstance(classifier, nn.Linear) and classifier.out_features == 10
    with torch.no_grad():
        assert torch.allclose(classifier(run.feats[-1]), run.logits, atol=1e-6)


def test_feat_modules_hold_every_parameter_but_the_classifier(run):
    feat_params = {id(p) for p in run.model.get_feat_modules().parameters()}
    classifier_params = {id(p) for p in run.model.get_classifier().parameters()}
    assert feat_params.isdisjoint(classifier_params)
    assert feat_params | classifier_params == {id(p) for p in run.model.parameters()}


def test_strict_round_trip_gives_identical_outputs(run):
    copy = imagenet_model_dict[run.name](num_classes=10)
    copy.load_state_dict(run.model.state_dict(), strict=True)
    copy.eval()
    with torch.no_grad():
        feats, logits = copy(run.x, is_feat=True)
    assert torch.equal(logits, run.logits)
    assert all(torch.equal(a, b) for a, b in zip(feats, run.feats))


@pytest.mark.parametrize('name', list(EXPECTED))
def test_training_step_reaches_every_parameter(name):
    # in-place ReLUs must leave autograd and the returned pre-activation features intact
    torch.manual_seed(0)
    model = imagenet_model_dict[name](num_classes=10).train()
    feats, logits = model(torch.randn(2, 3, SIZE, SIZE), is_feat=True, preact=name in HAS_PREACT)
    (logits.sum() + sum(f.mean() for f in feats)).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_channels_last_input(run):
    with torch.no_grad():
        logits = run.model(run.x.contiguous(memory_format=torch.channels_last))
    scale = run.logits.abs().max().item()
    torch.testing.assert_close(logits, run.logits, rtol=1e-3, atol=1e-4 * scale)


def test_bn_before_relu_channels(run):
    if run.name == 'ShuffleV2_Imagenet':
        with pytest.raises(KDZooError, match='OFD'):
            run.model.get_bn_before_relu()
        return
    bns = run.model.get_bn_before_relu()
    assert all(isinstance(bn, nn.BatchNorm2d) for bn in bns)
    assert [bn.num_features for bn in bns] == EXPECTED[run.name]['channels'][1:]


def capture_outputs(modules, model, x):
    """Run ``model`` on ``x`` and return what each of ``modules`` produced (inputs too, as pairs)."""
    seen = []
    hooks = [m.register_forward_hook(lambda m, args, out: seen.append((args[0].clone(), out.clone())))
             for m in modules]
    with torch.no_grad():
        model(x)
    for hook in hooks:
        hook.remove()
    return seen


@pytest.mark.parametrize('name', RESNETS)
def test_resnet_bn_before_relu_plus_shortcut_is_the_preact_feature(name):
    torch.manual_seed(0)
    model = imagenet_model_dict[name](num_classes=10).eval()
    x = torch.randn(2, 3, SIZE, SIZE)
    bn_outputs = [out for _, out in capture_outputs(model.get_bn_before_relu(), model, x)]
    # a stage's last block has an identity shortcut; blocks take pre-activation inputs and apply the ReLU
    last_block_inputs = [inp for inp, _ in capture_outputs([s[-1] for s in model.stages()], model, x)]
    with torch.no_grad():
        preact_feats, _ = model(x, is_feat=True, preact=True)
    for bn_out, block_in, pre in zip(bn_outputs, last_block_inputs, preact_feats[1:-1]):
        torch.testing.assert_close(bn_out + F.relu(block_in), pre)


def test_mobilenetv1_bn_before_relu_gives_the_preact_features():
    torch.manual_seed(0)
    model = imagenet_model_dict['MobileNetV1'](num_classes=10).eval()
    x = torch.randn(2, 3, SIZE, SIZE)
    bn_outputs = [out for _, out in capture_outputs(model.get_bn_before_relu(), model, x)]
    with torch.no_grad():
        preact_feats, _ = model(x, is_feat=True, preact=True)
    assert all(torch.equal(a, b) for a, b in zip(bn_outputs, preact_feats[1:-1]))


def test_resnet_stem_feature_is_torchvision_order():
    # f0 is computed as maxpool then ReLU; torchvision applies ReLU then maxpool: the two must agree exactly
    torch.manual_seed(0)
    model = imagenet_model_dict['ResNet18'](num_classes=10).eval()
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        feats, _ = model(x, is_feat=True)
        reference = F.max_pool2d(F.relu(model.bn1(model.conv1(x))), 3, stride=2, padding=1)
    assert torch.equal(feats[0], reference)


def test_resnet18_at_224():
    torch.manual_seed(0)
    model = imagenet_model_dict['ResNet18']().eval()
    with torch.no_grad():
        feats, logits = model(torch.randn(1, 3, 224, 224), is_feat=True)
    assert logits.shape == (1, 1000)
    assert [tuple(f.shape[1:]) for f in feats] == [(64, 56, 56), (64, 56, 56), (128, 28, 28), (256, 14, 14),
                                                   (512, 7, 7), (512,)]


def test_channel_shuffle_interleaves_two_groups():
    x = torch.arange(6.).reshape(1, 6, 1, 1)
    assert channel_shuffle(x, 2).flatten().tolist() == [0., 3., 1., 4., 2., 5.]

"""The feature API of every zoo model (models/features.py): ``forward_stages`` gives the maps ``forward``
reports plus the map the classifier pools, ``forward_features`` that one map (timm's meaning),
``forward_head`` pools and classifies it, and ``forward`` is them together, whatever the family puts between
its last stage and the pooling."""
import pytest
import torch
import torch.nn.functional as F

from models.features import run_network
from models import imagenet_model_dict, model_dict
from models.features import FeatureNet

# (zoo, name, input side): every CIFAR model at 32x32, VGG also at 64x64 (its pool3 runs only there), every
# ImageNet model at 64x64 (their pooling is adaptive, so a small input keeps the test fast).
CASES = ([('cifar', name, 32) for name in model_dict] + [('cifar', 'vgg8', 64)]
         + [('imagenet', name, 64) for name in imagenet_model_dict])


def build(zoo, name):
    torch.manual_seed(0)
    model = (model_dict if zoo == 'cifar' else imagenet_model_dict)[name](num_classes=10)
    gen = torch.Generator().manual_seed(1)
    for bn in model.modules():  # statistics off their defaults, so a BN that is skipped or run twice shows
        if isinstance(bn, torch.nn.BatchNorm2d):
            bn.running_mean.copy_(torch.randn(bn.running_mean.shape, generator=gen) * 0.1)
            bn.running_var.copy_(torch.rand(bn.running_var.shape, generator=gen) + 0.5)
    return model.eval()


@pytest.mark.parametrize('zoo, name, side', CASES, ids=[f'{z}-{n}-{s}' for z, n, s in CASES])
def test_head_of_features_is_forward(zoo, name, side):
    model = build(zoo, name)
    assert isinstance(model, FeatureNet) and type(model).forward is FeatureNet.forward  # one shared tail
    x = torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        logits = model(x)
        feats, feat_logits = model(x, is_feat=True)
        pre_feats, _ = model(x, is_feat=True, preact=True)
        maps = model.forward_stages(x)
        pre_maps = model.forward_stages(x, preact=True)
        final = model.forward_features(x)
        head_logits = model.forward_head(maps[-1])
        head_pooled = model.forward_head(maps[-1], pre_logits=True)
    pooled_map = maps[-1]
    # timm's reading: forward_features is the one unpooled final map, and the head of it gives the logits
    assert torch.is_tensor(final) and torch.equal(final, pooled_map)
    assert torch.equal(model.forward_head(final), logits)
    assert pooled_map.dim() == 4 and pooled_map.shape[1] == model.get_classifier().in_features
    assert torch.equal(head_logits, logits) and torch.equal(feat_logits, logits)
    # the pooled feature forward reports is the plain spatial mean of the last map
    assert torch.equal(pooled_map.mean((2, 3)), feats[-1])
    assert torch.equal(head_pooled, feats[-1])
    # everything before it is forward's list, in order, post- or pre-ReLU as asked
    assert len(maps) == len(feats) and len(pre_maps) == len(pre_feats)
    assert all(torch.equal(a, b) for a, b in zip(maps[:-1], feats[:-1]))
    assert all(torch.equal(a, b) for a, b in zip(pre_maps[:-1], pre_feats[:-1]))
    # the map that is pooled does not depend on preact
    assert torch.equal(pre_maps[-1], pooled_map)


def test_pooled_map_is_taken_after_the_head_layers():
    """Where layers stand between the last reported stage and the pooling, the last map is their output,
    not the stage's: checked against the layers run by hand on the stage output."""
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        wrn = build('cifar', 'wrn_16_1')
        maps = wrn.forward_stages(x)
        assert torch.equal(maps[-1], F.relu(wrn.bn1(maps[-2])))
        shuffle = build('cifar', 'ShuffleV2_0_5')
        maps = shuffle.forward_stages(x)
        assert torch.equal(maps[-1], F.relu(shuffle.bn2(shuffle.conv2(maps[-2]))))
        mobile = build('cifar', 'MobileNetV2')
        maps = mobile.forward_stages(x)
        assert torch.equal(maps[-1], mobile.conv2(maps[-2]))
        assert maps[-1].shape[1] == 1280 != maps[-2].shape[1]
        mobile = build('imagenet', 'MobileNetV2_Imagenet')
        maps = mobile.forward_stages(torch.randn(1, 3, 64, 64))
        assert torch.equal(maps[-1], mobile.features[-1](maps[-2]))
        # and where nothing stands between them, the stage output itself is pooled
        resnet = build('cifar', 'resnet8')
        maps = resnet.forward_stages(x)
        assert maps[-1] is maps[-2]


def test_run_network_with_the_pooled_map_trains_as_forward_does():
    """NORM's student runs through run_network(..., needs_pooled_map=True): in training mode it must give
    forward's features and logits, move the BN statistics as forward does, and pass gradients to the map."""
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    torch.manual_seed(0)
    via_api = model_dict['wrn_16_1'](num_classes=10).train()
    plain = model_dict['wrn_16_1'](num_classes=10).train()
    plain.load_state_dict(via_api.state_dict())
    out = run_network(via_api, x, True, False, True)
    feats, logits = plain(x, is_feat=True)
    assert torch.equal(out.logits, logits)
    assert all(torch.equal(a, b) for a, b in zip(out.feats, feats))
    for key, value in plain.state_dict().items():
        assert torch.equal(via_api.state_dict()[key], value), key
    assert out.pooled_map.requires_grad and torch.equal(out.pooled_map.mean((2, 3)), out.feats[-1])
    assert run_network(plain, x, True, False).pooled_map is None  # only asked for, never computed otherwise

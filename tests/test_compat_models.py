"""The model-side names the seeds' scripts use: the SimKD repo's ConvReg call and ImageNet zoo names,
RepDistiller's FT/AB modules from models.util, mdistiller's mobile_half."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from distiller_zoo import HintLoss
from helper.errors import KDZooError
from models import model_dict
from models.registry import build_model, check_model_name, guess_architectures, model_name_from_path


def test_convreg_simkd_call_returns_the_pair():
    from models.util import ConvReg
    torch.manual_seed(0)
    x, t = torch.randn(2, 8, 16, 16), torch.randn(2, 12, 8, 8)
    reg = ConvReg(x.shape, t.shape)
    f_s, f_t = reg(x, t)
    assert f_t is t and torch.equal(f_s, reg(x))  # RepDistiller's call gives the same map
    assert float(HintLoss()(f_s, f_t).detach()) > 0


def test_convreg_simkd_pools_the_teacher_map_for_a_smaller_student():
    """The SimKD repo's fourth case: a student map smaller than the teacher's (and not half of it) goes
    through a 3x3 same-size conv, BN and ReLU, and the teacher's map is average-pooled to its size."""
    from models.util import ConvReg
    torch.manual_seed(0)
    x, t = torch.randn(2, 8, 4, 4), torch.randn(2, 12, 16, 16)
    reg = ConvReg(x.shape, t.shape)
    assert (reg.conv.kernel_size, reg.conv.stride, reg.conv.padding) == ((3, 3), (1, 1), (1, 1))
    assert reg.conv.bias is not None  # nn.Conv2d's default, as in the SimKD repo
    f_s, f_t = reg(x, t)
    expected = F.relu(F.batch_norm(F.conv2d(x, reg.conv.weight, reg.conv.bias, padding=1), None, None,
                                   reg.bn.weight, reg.bn.bias, training=True))
    assert torch.allclose(f_s, expected, atol=1e-6)
    assert torch.equal(f_t, F.adaptive_avg_pool2d(t, (4, 4)))
    with pytest.raises(KDZooError, match=r"call it as regress\(f_s, f_t\)"):
        reg(x)
    with pytest.raises(KDZooError, match='ConvReg cannot map'):
        ConvReg(x.shape, t.shape, pool_target=False)


def test_repdistiller_ft_and_ab_modules_import_from_models_util():
    from models.util import Connector, Paraphraser, Translator
    from distiller_zoo.AB import Connector as ab_connector
    from distiller_zoo.FT import Paraphraser as ft_paraphraser, Translator as ft_translator
    assert (Connector, Paraphraser, Translator) == (ab_connector, ft_paraphraser, ft_translator)
    # RepDistiller's constructor arguments and outputs
    t_shape, s_shape = (2, 16, 8, 8), (2, 8, 8, 8)
    factor, rec = Paraphraser(t_shape)(torch.randn(t_shape))
    assert factor.shape == (2, 8, 8, 8) and rec.shape == t_shape
    assert Translator(s_shape, t_shape)(torch.randn(s_shape)).shape == (2, 8, 8, 8)
    connector = Connector([s_shape, (2, 16, 4, 4)], [t_shape, (2, 16, 4, 4)])
    out = connector([torch.randn(s_shape), torch.randn(2, 16, 4, 4)])
    assert [o.shape for o in out] == [t_shape, (2, 16, 4, 4)]
    import models.util
    with pytest.raises(AttributeError):
        models.util.NoSuchThing  # noqa: B018


def test_mobile_half_is_mdistillers_name_for_mobilenetv2():
    from models.mobilenetv2 import mobile_half
    assert check_model_name('mobile_half', 'cifar100', '--model_s') == 'MobileNetV2'
    assert model_dict['mobile_half'] is mobile_half
    net = build_model('mobile_half', 100)
    assert sum(p.numel() for p in net.parameters()) == sum(p.numel() for p in model_dict['MobileNetV2']().parameters())
    assert model_name_from_path('save/teachers/models/mobile_half_vanilla/mobile_half_best.pth') == 'MobileNetV2'
    assert 'mobile_half' not in guess_architectures(net.state_dict())
    assert 'MobileNetV2' in guess_architectures(net.state_dict())


@pytest.mark.parametrize('name', ['resnext50_32x4d', 'ResNet10x2', 'ResNet18x2', 'ResNet34x2', 'wrn_50_2'])
def test_simkd_imagenet_names_are_imagenet_models(name):
    assert check_model_name(name, 'imagenet') == name
    with pytest.raises(KDZooError, match=f"model '{name}' is an ImageNet architecture"):
        check_model_name(name, 'cifar100')
    assert model_name_from_path(f'save/teachers/models/{name}_vanilla_imagenet_trial_0/{name}_best.pth') == name


def test_simkd_imagenet_student_checkpoint_is_recognised(tmp_path):
    """A checkpoint of a SimKD-repo ResNet10x2 student (its names and shapes) is named for what it is."""
    from models.weights import load_weights
    from helper.errors import CheckpointError
    with torch.device('meta'):
        state = build_model('ResNet10x2', 1000, 'imagenet').state_dict()
    assert guess_architectures(state) == ['ResNet10x2']
    torch.manual_seed(0)
    real = {k: torch.zeros(v.shape, dtype=v.dtype) for k, v in state.items()}
    torch.save({'epoch': 1, 'model': real, 'best_acc': 1.0}, tmp_path / 'x.pth')
    with pytest.raises(CheckpointError, match=r"does not fit ResNet18 \(it looks like ResNet10x2\)"):
        load_weights(build_model('ResNet18', 1000, 'imagenet'), str(tmp_path / 'x.pth'), 'ResNet18')


def test_wide_student_distils_from_an_imagenet_teacher_shapes():
    """SimKD's projector and FitNet's regressor build for the new students as for the old ones."""
    from models.util import SimKD
    torch.manual_seed(0)
    student = build_model('ResNet10x2', 10, 'imagenet').eval()
    with torch.no_grad():
        feats, _ = student(torch.randn(1, 3, 64, 64), is_feat=True)
    proj = SimKD(s_n=feats[-2].shape[1], t_n=2048, factor=2)
    out, target, logits = proj(feats[-2], torch.randn(1, 2048, 2, 2), nn.Linear(2048, 10))
    assert out.shape == target.shape == (1, 2048, 2, 2) and logits.shape == (1, 10)

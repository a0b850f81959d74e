"""ICKD, SRD and MGD: each loss and its gradient against a float64 NumPy transcription of the official code
(ADLab-AutoDrive/ICKD ``Cifar100/distiller_zoo/ICKD.py`` and torchdistill's ``ChSimLoss``; torchdistill's
``SRDLoss`` with ``SRDModelWrapper`` and roymiles/Simple-Recipe-Distillation's ``OurDistillationLoss``;
yzd-v/MGD ``cls/mmcls/distillation/losses/mgd.py``), the modules built for CIFAR pairs, MGD's masks (their
rule, and that they depend on (seed, epoch, step) alone), the defaults, the bad flags, and a pack of the
three that equals the single runs."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import train_student
from distiller_zoo import DISTILLERS
from distiller_zoo.ICKD import ickd_loss
from distiller_zoo.MGD import MGDGenerator, draw_mask, mgd_loss, step_generator
from distiller_zoo.SRD import SRDProjector, srd_kl, srd_loss
from helper.errors import KDZooError
from models.features import NetOutput

from test_pack import assert_same_runs, random_teacher, single_runs
from reference import log_softmax, parse

from conftest import numeric_grad, small_digits_fixture

# The digits runs here train on the first 192 training and 64 test digits: they compare runs with each
# other, which does not need the whole data, and the whole digits cost minutes of CI per pack.
small_digits = small_digits_fixture(192, 64)

RNG = np.random.default_rng(23)


# ---------------------------------------------------------------------------------------------- ICKD

def official_ickd(f_s, f_t, power):
    """ICKDLoss.batch_loss (CIFAR code, power 1) / ChSimLoss.batch_loss (torchdistill, power 2) in NumPy:
    per-sample C x C Grams, rows divided by max(L2 norm, 1e-12), squared differences summed / (C * B^power)."""
    bsz, ch = f_s.shape[:2]

    def gram(f):
        f = f.reshape(bsz, ch, -1)
        g = f @ f.transpose(0, 2, 1)
        return g / np.maximum(np.sqrt((g * g).sum(axis=2, keepdims=True)), 1e-12)
    diff = gram(f_s) - gram(f_t)
    return (diff * diff).reshape(bsz, -1).sum() / (ch * bsz ** power)


def official_ickd_torch(f_s, f_t, power):
    """The same op for op in float64 torch (bmm, F.normalize(dim=2)), for its autograd gradient."""
    bsz, ch = f_s.shape[:2]
    f_s, f_t = f_s.view(bsz, ch, -1), f_t.view(bsz, ch, -1)
    emd_s = torch.nn.functional.normalize(torch.bmm(f_s, f_s.permute(0, 2, 1)), dim=2)
    emd_t = torch.nn.functional.normalize(torch.bmm(f_t, f_t.permute(0, 2, 1)), dim=2)
    g_diff = emd_s - emd_t
    return (g_diff * g_diff).view(bsz, -1).sum() / (ch * bsz ** power)


@pytest.mark.parametrize('power', [1, 2])
def test_ickd_value_and_gradient_match_the_official_code(power):
    # the teacher's map is smaller: a Gram is C x C whatever the positions
    f_s, f_t = RNG.normal(0, 1, (3, 4, 3, 3)), RNG.normal(0, 2, (3, 4, 2, 2))
    s = torch.tensor(f_s, requires_grad=True)
    value = ickd_loss(s, torch.tensor(f_t), power)
    value.backward()
    assert value.item() == pytest.approx(official_ickd(f_s, f_t, power), rel=1e-12)
    ref_s = torch.tensor(f_s, requires_grad=True)
    official_ickd_torch(ref_s, torch.tensor(f_t), power).backward()
    np.testing.assert_allclose(s.grad.numpy(), ref_s.grad.numpy(), rtol=1e-12, atol=1e-15)
    expected = numeric_grad(lambda x: official_ickd(x, f_t, power), f_s)
    np.testing.assert_allclose(s.grad.numpy(), expected, rtol=1e-6, atol=1e-9)


def test_ickd_by_hand():
    # equal maps give 0; a scaled copy too (rows are normalised); one channel zeroed gives a known value
    f = RNG.normal(0, 1, (2, 3, 2, 2))
    assert ickd_loss(torch.tensor(f), torch.tensor(3 * f)).item() == pytest.approx(0, abs=1e-12)
    f = np.zeros((1, 2, 1, 2))
    f[0, 0] = [1.0, 0.0]
    f[0, 1] = [0.0, 1.0]  # Gram = I
    g = np.ones((1, 2, 1, 2))  # Gram = [[2, 2], [2, 2]], rows normalised to 1/sqrt(2)
    expected = 2 * ((1 - 2 ** -0.5) ** 2 + 0.5) / 2  # two rows, each (1 - 1/sqrt2)^2 + (1/sqrt2)^2; / (C=2 * B=1)
    assert ickd_loss(torch.tensor(f), torch.tensor(g)).item() == pytest.approx(expected, rel=1e-12)


def test_ickd_under_half_precision_computes_in_fp32():
    f_s, f_t = RNG.normal(0, 1, (3, 4, 3, 3)), RNG.normal(0, 1, (3, 4, 3, 3))
    value = ickd_loss(torch.tensor(f_s).half(), torch.tensor(f_t).half())
    assert value.dtype == torch.float32
    assert value.item() == pytest.approx(official_ickd(f_s, f_t, 1), rel=1e-2)


# ---------------------------------------------------------------------------------------------- SRD

def batch_norm(x, eps=1e-4):
    """BatchNorm1d(affine=False) in training: the batch mean and the biased batch variance."""
    return (x - x.mean(axis=0)) / np.sqrt(x.var(axis=0) + eps)


def official_srd(z_s, z_t, y_s, y_t, weight, bias, exponent=4.0, T=1.0):
    """OurDistillationLoss.forward (the authors') / SRDLoss.forward on SRDModelWrapper outputs in NumPy:
    2 * log(sum |BN(z_s W^T + b) - BN(z_t)|^p) + T^2 * KL(softmax(y_t/T) || softmax(y_s/T)) / B."""
    f_s, f_t = batch_norm(z_s @ weight.T + bias), batch_norm(z_t)
    rep = 2.0 * np.log((np.abs(f_s - f_t) ** exponent).sum())
    log_p_s, log_p_t = log_softmax(y_s / T), log_softmax(y_t / T)
    kl = (np.exp(log_p_t) * (log_p_t - log_p_s)).sum() * T ** 2 / y_s.shape[0]
    return rep + kl


def official_srd_torch(z_s, z_t, y_s, y_t, weight, bias, exponent=4.0, T=1.0):
    """forward_loss and the logit loss of the authors' code, op for op in float64 torch."""
    bn = torch.nn.BatchNorm1d(weight.shape[0], eps=0.0001, affine=False).double()
    f_s = bn(torch.nn.functional.linear(z_s, weight, bias))
    f_t = bn(z_t)
    c_diff = torch.abs(f_s - f_t).pow(exponent)
    l_rep = 2.0 * torch.log(c_diff.sum())
    p_s = torch.nn.functional.log_softmax(y_s / T, dim=1)
    p_t = torch.nn.functional.softmax(y_t / T, dim=1)
    l_logit = torch.nn.functional.kl_div(p_s, p_t, reduction='sum') * (T ** 2) / y_s.shape[0]
    return l_rep + l_logit


def srd_inputs(n=5, s_dim=3, t_dim=4, classes=6):
    return (RNG.normal(0, 1, (n, s_dim)), RNG.normal(0, 2, (n, t_dim)), RNG.normal(0, 2, (n, classes)),
            RNG.normal(0, 3, (n, classes)), RNG.normal(0, 0.5, (t_dim, s_dim)), RNG.normal(0, 0.1, t_dim))


def ours_srd(z_s, z_t, y_s, y_t, weight, bias, exponent=4.0, T=1.0):
    """kdzoo's SRDProjector (in training) and srd_loss in float64: value and gradients of z_s and y_s."""
    projector = SRDProjector(*weight.shape[::-1]).double()
    with torch.no_grad():
        projector.linear.weight.copy_(torch.tensor(weight))
        projector.linear.bias.copy_(torch.tensor(bias))
    s, y = torch.tensor(z_s, requires_grad=True), torch.tensor(y_s, requires_grad=True)
    value = srd_loss(*projector(s, torch.tensor(z_t)), y, torch.tensor(y_t), exponent, T)
    value.backward()
    return value.item(), s.grad.numpy(), y.grad.numpy()


@pytest.mark.parametrize('exponent, T', [(4.0, 1.0), (2.0, 4.0)])
def test_srd_value_and_gradient_match_the_official_code(exponent, T):
    z_s, z_t, y_s, y_t, weight, bias = srd_inputs()
    value, grad_z, grad_y = ours_srd(z_s, z_t, y_s, y_t, weight, bias, exponent, T)
    assert value == pytest.approx(official_srd(z_s, z_t, y_s, y_t, weight, bias, exponent, T), rel=1e-12)
    s, y = torch.tensor(z_s, requires_grad=True), torch.tensor(y_s, requires_grad=True)
    official_srd_torch(s, torch.tensor(z_t), y, torch.tensor(y_t), torch.tensor(weight), torch.tensor(bias),
                       exponent, T).backward()
    np.testing.assert_allclose(grad_z, s.grad.numpy(), rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(grad_y, y.grad.numpy(), rtol=1e-10, atol=1e-13)
    expected = numeric_grad(lambda x: official_srd(x, z_t, y_s, y_t, weight, bias, exponent, T), z_s)
    np.testing.assert_allclose(grad_z, expected, rtol=1e-5, atol=1e-8)
    expected = numeric_grad(lambda x: official_srd(z_s, z_t, x, y_t, weight, bias, exponent, T), y_s)
    np.testing.assert_allclose(grad_y, expected, rtol=1e-5, atol=1e-8)


def test_srd_normalises_with_batch_statistics_and_a_batch_of_one_keeps_the_kl_alone():
    z_s, z_t, y_s, y_t, weight, bias = srd_inputs()
    args = parse('srd')
    probe = NetOutput(torch.zeros(2, 6), [torch.zeros(2, 3)]), NetOutput(torch.zeros(2, 6), [torch.zeros(2, 4)])
    method = DISTILLERS['srd'](args, None, None, *probe, None).double().train()
    with torch.no_grad():
        method.projector.linear.weight.copy_(torch.tensor(weight))
        method.projector.linear.bias.copy_(torch.tensor(bias))
    out_s = NetOutput(torch.tensor(y_s), [torch.tensor(z_s)])
    out_t = NetOutput(torch.tensor(y_t), [torch.tensor(z_t)])
    loss = method.method_loss(out_s, out_t, None, 1)
    assert loss.item() == pytest.approx(official_srd(z_s, z_t, y_s, y_t, weight, bias), rel=1e-12)
    one_s, one_t = NetOutput(out_s.logits[:1], [out_s.feats[0][:1]]), NetOutput(out_t.logits[:1], [out_t.feats[0][:1]])
    loss = method.method_loss(one_s, one_t, None, 1)
    assert loss.item() == pytest.approx(srd_kl(out_s.logits[:1], out_t.logits[:1]).item(), rel=1e-12)
    loss.backward()  # the projector is in the graph, at zero gradient
    assert torch.equal(method.projector.linear.weight.grad, torch.zeros_like(method.projector.linear.weight))


# ---------------------------------------------------------------------------------------------- MGD

def conv3x3(x, weight, bias):
    """A 3x3 convolution with padding 1 (cross-correlation, as nn.Conv2d) in NumPy."""
    n, c, h, w = x.shape
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    out = np.zeros((n, weight.shape[0], h, w))
    for i in range(3):
        for j in range(3):
            out += np.einsum('nchw,oc->nohw', padded[:, :, i:i + h, j:j + w], weight[:, :, i, j])
    return out + bias[None, :, None, None]


def official_mgd(preds_s, preds_t, mat, align, gen):
    """MGDLoss.get_dis_loss on the student map (aligned by a 1x1 conv if ``align``) with the mask ``mat``:
    generation = conv3x3, ReLU, conv3x3; MSELoss(sum)(generated, teacher) / N."""
    if align is not None:
        preds_s = np.einsum('nchw,oc->nohw', preds_s, align[0][:, :, 0, 0]) + align[1][None, :, None, None]
    hidden = np.maximum(conv3x3(preds_s * mat, *gen[0]), 0)
    new_fea = conv3x3(hidden, *gen[1])
    return ((new_fea - preds_t) ** 2).sum() / preds_t.shape[0]


def mgd_params(module):
    """The NumPy weights of an MGDGenerator: (align or None, [(w, b) of the two generation convs])."""
    convs = [module.generation[0], module.generation[2]]
    gen = [(c.weight.detach().numpy(), c.bias.detach().numpy()) for c in convs]
    align = None if module.align is None else (module.align.weight.detach().numpy(), module.align.bias.detach().numpy())
    return align, gen


@pytest.mark.parametrize('s_n, mode', [(3, 'channel'), (2, 'spatial')])
def test_mgd_value_and_gradient_match_the_official_code(s_n, mode):
    torch.manual_seed(0)
    module = MGDGenerator(s_n, 3).double()
    assert (module.align is None) == (s_n == 3)
    f_s, f_t = RNG.normal(0, 1, (2, s_n, 4, 4)), RNG.normal(0, 1, (2, 3, 4, 4))
    mask = draw_mask((2, 3, 4, 4), 0.4, mode, step_generator(7, 1, 1)).double()
    s = torch.tensor(f_s, requires_grad=True)
    value = mgd_loss(module(s, mask), torch.tensor(f_t))
    value.backward()
    align, gen = mgd_params(module)
    assert value.item() == pytest.approx(official_mgd(f_s, f_t, mask.numpy(), align, gen), rel=1e-12)
    expected = numeric_grad(lambda x: official_mgd(x, f_t, mask.numpy(), align, gen), f_s)
    np.testing.assert_allclose(s.grad.numpy(), expected, rtol=1e-6, atol=1e-8)


def test_mgd_masks_follow_the_official_rules():
    # channel: (B, C, 1, 1), zero where u < lambda; spatial: (B, 1, H, W), zero where u > 1 - lambda
    u = torch.rand((4, 5, 1, 1), generator=step_generator(3, 2, 9))
    mask = draw_mask((4, 5, 6, 6), 0.3, 'channel', step_generator(3, 2, 9))
    assert torch.equal(mask, torch.where(u < 0.3, 0, 1).float())
    u = torch.rand((4, 1, 6, 6), generator=step_generator(3, 2, 9))
    mask = draw_mask((4, 5, 6, 6), 0.3, 'spatial', step_generator(3, 2, 9))
    assert torch.equal(mask, torch.where(u > 1 - 0.3, 0, 1).float())
    big = draw_mask((100, 100, 1, 1), 0.15, 'channel', step_generator(0, 1, 1))
    assert 1 - big.mean().item() == pytest.approx(0.15, abs=0.01)
    assert draw_mask((2, 3, 1, 1), 0.0, 'channel', step_generator(0, 1, 1)).min() == 1


def mgd_method(seed=5, **flags):
    args = parse('mgd', *flags)
    probe = NetOutput(torch.zeros(2, 4), [torch.zeros(2, 3, 4, 4)] * 2)
    data = SimpleNamespace(train=SimpleNamespace(seed=seed))
    return DISTILLERS['mgd'](args, None, None, probe, probe, data)


def test_mgd_masks_depend_on_seed_epoch_and_step_alone():
    """The step count restarts with each epoch: a method built afresh for epoch 2 (a resumed run) draws what
    the one that trained epoch 1 draws there; global random state plays no part."""
    whole, resumed = mgd_method(), mgd_method()
    first = [whole.next_mask((8, 16, 4, 4), 1, 'cpu') for _ in range(3)]
    assert not torch.equal(first[0], first[1])
    torch.manual_seed(123)
    second = [whole.next_mask((8, 16, 4, 4), 2, 'cpu') for _ in range(3)]
    torch.manual_seed(456)
    again = [resumed.next_mask((8, 16, 4, 4), 2, 'cpu') for _ in range(3)]
    assert all(torch.equal(a, b) for a, b in zip(second, again))
    assert not torch.equal(first[0], second[0])
    other_seed = mgd_method(seed=6).next_mask((8, 16, 4, 4), 1, 'cpu')
    assert not torch.equal(first[0], other_seed)


# ---------------------------------------------------------------------------------------------- the modules

@pytest.fixture(scope='module')
def probes():
    """The eval-mode probe outputs of the CIFAR models below, each built once."""
    from distiller_zoo.teacher import probe_networks
    from models.registry import build_model
    torch.manual_seed(0)
    names = ['resnet32x4', 'resnet8x4', 'wrn_40_2', 'wrn_16_2', 'vgg13', 'vgg8', 'ShuffleV1']
    nets = {name: build_model(name, 100, 'cifar100', '--model_s') for name in names}
    return {name: probe_networks(net, net, False, 32)[0] for name, net in nets.items()}


@pytest.mark.parametrize('model_t, model_s, ickd, srd, mgd', [
    # ICKD's embedding conv (out, in, k, k); SRD's Linear (out, in); MGD's align (None: equal widths), generation
    ('resnet32x4', 'resnet8x4', (256, 256, 1, 1), (256, 256), (None, 256)),
    ('wrn_40_2', 'wrn_16_2', (128, 128, 1, 1), (128, 128), (None, 128)),
    ('vgg13', 'vgg8', (512, 512, 1, 1), (512, 512), (None, 512)),
    ('resnet32x4', 'wrn_16_2', (256, 128, 1, 1), (256, 128), ((256, 128, 1, 1), 256)),
])
def test_modules_for_cifar_pairs(probes, model_t, model_s, ickd, srd, mgd):
    probe_s, probe_t = probes[model_s], probes[model_t]
    args = parse('ickd', model_t=model_t, model_s=model_s)
    method = DISTILLERS['ickd'](args, None, None, probe_s, probe_t, None)
    assert tuple(method.embed.conv2d.weight.shape) == ickd and method.embed.conv2d.bias is None
    assert method.power == 1
    args = parse('srd', model_t=model_t, model_s=model_s)
    method = DISTILLERS['srd'](args, None, None, probe_s, probe_t, None)
    assert tuple(method.projector.linear.weight.shape) == srd
    assert not any(p.requires_grad for p in method.projector.norm_t.parameters())
    assert method.projector.norm_s.eps == method.projector.norm_t.eps == 1e-4
    args = parse('mgd', model_t=model_t, model_s=model_s)
    method = DISTILLERS['mgd'](args, None, None, probe_s, probe_t, None)
    align, width = mgd
    assert (method.generator.align is None if align is None else tuple(method.generator.align.weight.shape) == align)
    assert [tuple(method.generator.generation[i].weight.shape) for i in (0, 2)] == [(width, width, 3, 3)] * 2
    assert method.draws.seed == 0  # no loader, no --seed


def test_imagenet_embedding_is_3x3_and_the_sizes_of_ickd_maps_may_differ(probes):
    args = parse('ickd', model_t='ResNet34', model_s='ResNet18', dataset='imagenet')
    method = DISTILLERS['ickd'](args, None, None, probes['ShuffleV1'], probes['resnet32x4'], None)
    assert tuple(method.embed.conv2d.weight.shape) == (256, 960, 3, 3) and method.power == 2
    f_s, f_t = probes['ShuffleV1'].feats[-2], probes['resnet32x4'].feats[-2]  # 4x4 and 8x8
    assert torch.isfinite(method.method_loss(NetOutput(None, [f_s] * 2), NetOutput(None, [f_t] * 2), None, 1))


# ---------------------------------------------------------------------------------------------- flags

def test_defaults_per_data_set():
    args = parse('ickd')
    assert (args.gamma, args.alpha, args.beta, args.ickd_kernel, args.ickd_reduction) == (1.0, 0.0, 2.5, 1, 'batch')
    args = parse('ickd', model_t='ResNet34', model_s='ResNet18', dataset='imagenet')
    assert (args.gamma, args.alpha, args.beta, args.ickd_kernel, args.ickd_reduction) == \
        (0.5, 0.5, 500.0, 3, 'batch_squared')
    args = parse('ickd', '-a', '1', '--ickd_kernel', '3', '--ickd_reduction', 'batch_squared')
    assert (args.alpha, args.beta, args.ickd_kernel, args.ickd_reduction) == (1.0, 2.5, 3, 'batch_squared')
    args = parse('srd')
    assert (args.gamma, args.alpha, args.beta, args.srd_exponent, args.srd_T) == (1.0, 0.0, 1.0, 4.0, 1.0)
    args = parse('mgd', model_t='ResNet50', model_s='MobileNetV1', dataset='imagenet')
    assert (args.gamma, args.alpha, args.beta, args.mgd_lambda, args.mgd_mask) == (1.0, 0.0, 7e-5, 0.15, 'channel')
    assert parse('mgd', '--mgd_mask', 'spatial', '--mgd_lambda', '0.5').mgd_mask == 'spatial'


@pytest.mark.parametrize('name, flags, message', [
    ('ickd', ['--ickd_kernel', '2'], '--ickd_kernel must be a positive odd number'),
    ('ickd', ['--ickd_kernel', '0'], '--ickd_kernel must be a positive odd number'),
    ('srd', ['--srd_exponent', '0'], '--srd_exponent must be positive'),
    ('srd', ['--srd_T', '-1'], '--srd_T must be positive'),
    ('srd', ['--batch_size', '1'], 'needs --batch_size 2 or more'),
    ('mgd', ['--mgd_lambda', '1'], '--mgd_lambda is the fraction of the map masked'),
    ('mgd', ['--mgd_lambda', '-0.1'], '--mgd_lambda is the fraction of the map masked'),
])
def test_undefined_settings_are_refused(name, flags, message):
    with pytest.raises(KDZooError, match=message):
        parse(name, *flags)


def test_mgd_refuses_maps_of_different_sizes(probes):
    args = parse('mgd', model_s='ShuffleV1')
    with pytest.raises(KDZooError, match="student's is 4x4 and the teacher's 8x8") as err:
        DISTILLERS['mgd'](args, None, None, probes['ShuffleV1'], probes['resnet32x4'], None)
    assert '\n' not in str(err.value)


@pytest.mark.slow
def test_pack_of_ickd_srd_mgd_equals_the_single_runs(tmp_path):
    teacher = random_teacher(tmp_path / 'teacher', 'resnet20', 10)
    common = ['--path_t', teacher, '--dataset', 'digits', '--epochs', '1', '--deterministic', '--print_freq', '5']
    train_student.main([*common, '--model_s', 'resnet8', '--distill', 'ickd,srd,mgd:mgd_mask=spatial',
                        '--save_root', str(tmp_path / 'pack')])
    single_runs(common, [('resnet8', 'ickd'), ('resnet8', 'srd'), ('resnet8', 'mgd', '--mgd_mask', 'spatial')],
                tmp_path / 'single')
    assert_same_runs(tmp_path / 'single', tmp_path / 'pack')

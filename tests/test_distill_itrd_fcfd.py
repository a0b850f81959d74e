"""ITRD and FCFD: each loss and its gradient against a float64 transcription of the official code (roymiles/ITRD
``distiller_zoo/IT.py``; LiuDongyang6/FCFD ``classification/cifar/main.py`` and ``models/meta.py``), the defaults,
the bad flags, the stage-resume forward of models/ and a pack of both that equals the single runs."""
import numpy as np
import pytest
import torch

import train_student
from distiller_zoo import DISTILLERS
from distiller_zoo.ITRD import ITLoss, itrd_correlation, itrd_mutual
from helper.errors import KDZooError

from test_pack import assert_same_runs, random_teacher, single_runs

RNG = np.random.default_rng(23)


def parse(name, *flags, model_t='resnet32x4', model_s='resnet8x4', dataset='cifar100'):
    return train_student.parse_args(['--path_t', 'teacher.pth', '--model_t', model_t, '--model_s', model_s,
                                     '--dataset', dataset, '--distill', name, *flags])


def numeric_grad(f, x, h=1e-6):
    """Central differences of the scalar f at x, entry by entry."""
    grad = np.zeros_like(x)
    for index in np.ndindex(*x.shape):
        up, down = x.copy(), x.copy()
        up[index] += h
        down[index] -= h
        grad[index] = (f(up) - f(down)) / (2 * h)
    return grad


# ---------------------------------------------------------------------------------------------- ITRD

def official_correlation(f_s, f_t, alpha):
    """``ITLoss.forward_correlation_it`` in NumPy after ``self.embed``: z-scores with the unbiased std (torch's
    ``std(0)``), c = einsum('bx,bx->x') / n, log2 of sum((|c - 1|^2)^alpha)."""
    n = f_s.shape[0]
    s = (f_s - f_s.mean(0)) / f_s.std(0, ddof=1)
    t = (f_t - f_t.mean(0)) / f_t.std(0, ddof=1)
    c = np.einsum('bx,bx->x', s, t) / n
    return np.log2(((np.abs(c - 1) ** 2.0) ** alpha).sum())


def official_mutual(f_s, f_t):
    """``ITLoss.forward_mutual_it`` in NumPy after the embedding: F.normalize rows (eps 1e-12), G_s, G_t by
    einsum('bx,dx->bd'), G_st = G_s * G_t, each over its trace, sum(G_s^2 - G_st^2)."""
    s = f_s / np.maximum(np.linalg.norm(f_s, axis=1, keepdims=True), 1e-12)
    t = f_t / np.maximum(np.linalg.norm(f_t, axis=1, keepdims=True), 1e-12)
    g_s = np.einsum('bx,dx->bd', s, s)
    g_st = g_s * np.einsum('bx,dx->bd', t, t)
    g_s, g_st = g_s / np.trace(g_s), g_st / np.trace(g_st)
    return (g_s ** 2 - g_st ** 2).sum()


def official_itloss_torch(weight, bias, z_s, z_t, alpha, lambda_corr, lambda_mutual):
    """The official ITLoss terms op for op in float64 torch (Embed's ``x.view(B, -1)`` and Linear written out), as
    helper/loops.py weights them: lambda_corr * corr + lambda_mutual * mutual, the embedding shared."""
    f_s = z_s.view(z_s.shape[0], -1) @ weight.t() + bias
    n = f_s.shape[0]
    f_s_norm = (f_s - f_s.mean(0)) / f_s.std(0)
    f_t_norm = (z_t - z_t.mean(0)) / z_t.std(0)
    c_st = torch.einsum('bx,bx->x', f_s_norm, f_t_norm) / n
    corr = torch.log2(torch.abs(c_st - torch.ones_like(c_st)).pow(2.0).pow(alpha).sum())
    m_s = f_s if z_s.shape[1] != z_t.shape[1] else z_s
    s_n, t_n = torch.nn.functional.normalize(m_s), torch.nn.functional.normalize(z_t)
    g_s = torch.einsum('bx,dx->bd', s_n, s_n)
    g_st = g_s * torch.einsum('bx,dx->bd', t_n, t_n)
    g_s, g_st = g_s / torch.trace(g_s), g_st / torch.trace(g_st)
    mutual = (g_s.pow(2) - g_st.pow(2)).sum()
    return lambda_corr * corr + lambda_mutual * mutual


@pytest.mark.parametrize('alpha', [1.5, 1.01, 2.0])
def test_itrd_terms_match_the_official_code(alpha):
    f_s, f_t = RNG.normal(0, 1, (6, 5)), RNG.normal(0, 2, (6, 5)) + 1
    value = itrd_correlation(torch.tensor(f_s), torch.tensor(f_t), alpha).item()
    assert value == pytest.approx(official_correlation(f_s, f_t, alpha), rel=1e-12)
    assert itrd_mutual(torch.tensor(f_s), torch.tensor(f_t)).item() == \
        pytest.approx(official_mutual(f_s, f_t), rel=1e-12, abs=1e-15)
    # gradients: central differences of the NumPy transcription
    for loss, reference in ((lambda s: itrd_correlation(s, torch.tensor(f_t), alpha),
                             lambda s: official_correlation(s, f_t, alpha)),
                            (lambda s: itrd_mutual(s, torch.tensor(f_t)), lambda s: official_mutual(s, f_t))):
        s = torch.tensor(f_s, requires_grad=True)
        loss(s).backward()
        np.testing.assert_allclose(s.grad.numpy(), numeric_grad(reference, f_s), rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize('s_dim, t_dim', [(4, 6), (5, 5)])
def test_itrd_method_term_and_gradient_match_the_official_loop(s_dim, t_dim):
    """The method's -b term is lambda_corr * corr + lambda_mutual * mut with ITLoss's shared embed (applied to the
    mutual term only when the widths differ); value and gradients (student features and embed) as the official."""
    from types import SimpleNamespace

    from models.features import NetOutput
    args = parse('itrd', '--lambda_corr', '2', '--lambda_mutual', '0.05', '--alpha_it', '1.01')
    probe_s, probe_t = NetOutput(None, [torch.zeros(2, s_dim)]), NetOutput(None, [torch.zeros(2, t_dim)])
    torch.manual_seed(0)
    method = DISTILLERS['itrd'](args, None, None, probe_s, probe_t, None).double()
    z_s = torch.tensor(RNG.normal(0, 1, (8, s_dim)), requires_grad=True)
    z_t = torch.tensor(RNG.normal(0.5, 1, (8, t_dim)))
    y = torch.zeros(8, dtype=torch.long)
    terms = method.losses(NetOutput(torch.zeros(8, 3, dtype=torch.float64), [z_s]),
                          NetOutput(torch.zeros(8, 3, dtype=torch.float64), [z_t]), SimpleNamespace(targets=y), 1)
    assert set(terms) == {'ce', 'itrd'}
    terms['itrd'].backward()
    embed = method.criterion.embed
    weight = embed.weight.detach().clone().requires_grad_(True)
    bias = embed.bias.detach().clone().requires_grad_(True)
    z_s2 = z_s.detach().clone().requires_grad_(True)
    reference = official_itloss_torch(weight, bias, z_s2, z_t, 1.01, 2.0, 0.05)
    reference.backward()
    assert terms['itrd'].item() == pytest.approx(reference.item(), rel=1e-12)
    for mine, theirs in ((z_s.grad, z_s2.grad), (embed.weight.grad, weight.grad), (embed.bias.grad, bias.grad)):
        np.testing.assert_allclose(mine.numpy(), theirs.numpy(), rtol=1e-10, atol=1e-13)


def test_itrd_by_hand():
    # teacher = embedded student: every correlation is (n - 1) / n, so the term is log2(D * (1/n^2)^alpha)
    f = RNG.normal(0, 1, (4, 3))
    value = itrd_correlation(torch.tensor(f), torch.tensor(f), 1.5).item()
    assert value == pytest.approx(np.log2(3 * (1 / 16) ** 1.5), rel=1e-12)
    # identical directions: G_st = G_s^2, and sum(G_s^2 / tr^2 - G_s^4 / tr(G_s^2)^2)
    rows = f / np.linalg.norm(f, axis=1, keepdims=True)
    g = rows @ rows.T
    expected = (g ** 2 / 16).sum() - (g ** 4).sum() / 16
    assert itrd_mutual(torch.tensor(f), torch.tensor(f)).item() == pytest.approx(expected, rel=1e-12)


def test_itrd_loss_module_keeps_the_official_names():
    loss = ITLoss(4, 6, 1.5)
    assert isinstance(loss.embed, torch.nn.Linear) and loss.embed.weight.shape == (6, 4)
    z_s, z_t = torch.randn(5, 4), torch.randn(5, 6)
    assert torch.isfinite(loss.forward_correlation_it(z_s, z_t)) and torch.isfinite(loss.forward_mutual_it(z_s, z_t))


def test_itrd_under_half_precision_computes_in_fp32():
    f_s, f_t = torch.randn(8, 5), torch.randn(8, 5)
    value = itrd_correlation(f_s.half(), f_t.half(), 1.5)
    assert value.dtype == torch.float32
    assert value.item() == pytest.approx(itrd_correlation(f_s.half().float(), f_t.half().float(), 1.5).item())


def test_itrd_defaults():
    args = parse('itrd')
    assert (args.gamma, args.alpha, args.beta) == (1.0, 0.0, 1.0)
    assert (args.lambda_corr, args.lambda_mutual, args.alpha_it) == (2.0, 1.0, 1.5)
    args = parse('ITRD', '--lambda_mutual', '0.05', '--alpha_it', '1.01', '-b', '2')
    assert (args.beta, args.lambda_mutual, args.alpha_it) == (2.0, 0.05, 1.01)
    assert DISTILLERS['itrd'].needs_feats


@pytest.mark.parametrize('name, flags, message', [
    ('itrd', ['--lambda_corr', '-1'], '--lambda_corr cannot be negative'),
    ('itrd', ['--lambda_mutual', '-0.5'], '--lambda_mutual cannot be negative'),
    ('itrd', ['--alpha_it', '0'], '--alpha_it must be positive'),
    ('itrd', ['--batch_size', '1'], '--batch_size must be at least 2'),
])
def test_undefined_settings_are_refused(name, flags, message):
    with pytest.raises(KDZooError, match=message):
        parse(name, *flags)


# ---------------------------------------------------------------------------------------------- pack

@pytest.mark.slow
def test_pack_equals_the_single_runs(tmp_path):
    teacher = random_teacher(tmp_path / 'teacher', 'resnet20', 10)
    common = ['--path_t', teacher, '--dataset', 'digits', '--epochs', '1', '--deterministic', '--print_freq', '5']
    train_student.main([*common, '--model_s', 'resnet8', '--distill', 'kd,itrd:lambda_mutual=0.05',
                        '--save_root', str(tmp_path / 'pack')])
    single_runs(common, [('resnet8', 'kd'), ('resnet8', 'itrd', '--lambda_mutual', '0.05')], tmp_path / 'single')
    assert_same_runs(tmp_path / 'single', tmp_path / 'pack')


# ---------------------------------------------------------------------------------------------- forward_from

RESUMABLE = [('resnet8', 32), ('resnet8x4', 32), ('wrn_16_2', 32), ('vgg8', 32), ('vgg8', 64), ('MobileNetV2', 32),
             ('ShuffleV1', 32), ('ShuffleV2', 32), ('ResNet18', 32), ('MobileNetV1', 32),
             ('MobileNetV2_Imagenet', 32), ('ShuffleV2_Imagenet', 64)]


@pytest.mark.parametrize('name, size', RESUMABLE)
def test_forward_from_any_stage_map_gives_the_networks_own_logits(name, size):
    """Running stage k's map from k on equals the full forward, for every k (the pooled map m included)."""
    from models.registry import ALL_MODELS
    torch.manual_seed(0)
    net = ALL_MODELS[name](num_classes=5).eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        maps, logits = net.forward_stages(x), net(x)
        for k, m in enumerate(maps):
            assert torch.equal(net.forward_from(k, m), logits), (name, k)
        # and it is the stages that run: another map at stage 1 gives other logits (the untrained MobileNetV1's
        # last map is all zeros, whatever its input)
        assert name == 'MobileNetV1' or not torch.allclose(net.forward_from(1, torch.randn_like(maps[1]).abs()), logits)


def test_forward_from_refuses_what_it_cannot_serve():
    from models.registry import ALL_MODELS
    with pytest.raises(KDZooError, match='HCGNet cannot be run from an intermediate stage on'):
        ALL_MODELS['hcgnet_A1'](num_classes=5).forward_from(1, torch.zeros(1))
    with pytest.raises(KDZooError, match=r'stage 5 is out of range for ResNet, whose stage maps are 0\.\.4'):
        ALL_MODELS['resnet8'](num_classes=5).forward_from(5, torch.zeros(1))

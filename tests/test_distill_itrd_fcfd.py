"""ITRD and FCFD: each loss and its gradient against a float64 transcription of the official code (roymiles/ITRD
``distiller_zoo/IT.py``; LiuDongyang6/FCFD ``classification/cifar/main.py`` and ``models/meta.py``), the defaults,
the bad flags, the stage-resume forward of models/ and a pack of both that equals the single runs."""
import random

import numpy as np
import pytest
import torch

import train_student
from dataset.batches import step_seed
from distiller_zoo import DISTILLERS
from distiller_zoo.FCFD import PATH_STREAM, candidate_paths, fcfd_l2
from distiller_zoo.ITRD import ITLoss, itrd_correlation, itrd_mutual
from helper.errors import KDZooError

from conftest import first_digits, numeric_grad
from reference import parse
from test_pack import assert_same_runs, random_teacher, single_runs

RNG = np.random.default_rng(23)


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


# ---------------------------------------------------------------------------------------------- FCFD

def test_fcfd_candidate_paths_are_the_official_lists():
    """meta.py's _create_candidate_path, written out there for 4 and 5 stages."""
    assert candidate_paths(4, 'bi') == [[0, 0, 1, 1], [0, 0, 0, 1], [1, 1, 0, 0], [1, 1, 1, 0]]
    assert candidate_paths(5, 'bi') == [[0, 0, 1, 1, 1], [0, 0, 0, 1, 1], [0, 0, 0, 0, 1], [1, 1, 0, 0, 0],
                                        [1, 1, 1, 0, 0], [1, 1, 1, 1, 0]]
    assert candidate_paths(4, 's2t') == [[1, 1, 0, 0], [1, 1, 1, 0]]
    assert candidate_paths(5, 't2s') == [[0, 0, 1, 1, 1], [0, 0, 0, 1, 1], [0, 0, 0, 0, 1]]
    assert candidate_paths(4, 'nomix') == []


def official_l2(stage_dicts):
    """The L2 loop of cifar/main.py's train_one_epoch in NumPy, per stage a list of maps whose first is the
    teacher's own: MSE of the others to it, and at the last stage of their ReLU'd, pooled vectors."""
    loss = 0.0
    for stage, values in enumerate(stage_dicts):
        target = values[0]
        for val in values[1:]:
            loss += ((val - target) ** 2).mean()
        if stage == len(stage_dicts) - 1:
            pooled = np.maximum(target, 0).mean(axis=(2, 3))
            for val in values[1:]:
                loss += ((np.maximum(val, 0).mean(axis=(2, 3)) - pooled) ** 2).mean()
    return loss


def test_fcfd_l2_value_and_gradient_match_the_official_loop():
    shapes = [(2, 3, 4, 4), (2, 2, 2, 2), (2, 3, 2, 2)]
    counts = [1, 2, 3]  # the bridged student map, and maps of the sampled student-to-teacher paths
    targets = [RNG.normal(0, 1, shape) for shape in shapes]
    values = [[RNG.normal(0, 1, shape) for _ in range(k)] for shape, k in zip(shapes, counts)]
    tensors = [[torch.tensor(v, requires_grad=True) for v in vs] for vs in values]
    loss = fcfd_l2(tensors, [torch.tensor(t) for t in targets])
    assert loss.item() == pytest.approx(official_l2([[t] + vs for t, vs in zip(targets, values)]), rel=1e-12)
    loss.backward()
    for stage, vs in enumerate(values):
        for k, v in enumerate(vs):
            def f(x, stage=stage, k=k):
                changed = [list(row) for row in values]
                changed[stage][k] = x
                return official_l2([[t] + row for t, row in zip(targets, changed)])
            np.testing.assert_allclose(tensors[stage][k].grad.numpy(), numeric_grad(f, v), rtol=1e-5, atol=1e-9)


def official_meta_forward(stage_forward, classify, bridge, images, full_paths, n_stages):
    """MetaModel.forward of meta.py (models 0 the teacher, 1 the student) over given stage, classifier and bridge
    functions: stage maps named by path prefixes, a pure student map always bridged into the teacher, a pure map
    bridged into the other network when a sampled path goes on there; (outputs, inters[1:])."""
    def first_n(path, until):
        return path[0] if until == 0 else '.'.join(path[:until + 1])

    def is_pure(name):
        parts = name.split('.')
        return all(p == parts[0] for p in parts)

    paths = [[str(m) for m in p] for p in full_paths]
    inters = [[{} for _ in range(2)] for _ in range(n_stages)]
    for stage in range(n_stages):
        for path in paths:
            m = int(path[stage])
            x = images if stage == 0 else inters[stage - 1][m][first_n(path, stage - 1)]
            name = first_n(path, stage)
            if name not in inters[stage][m]:
                out = stage_forward(m, stage, x)
                inters[stage][m][name] = out
                if is_pure(name) and stage != 0:
                    other = 1 - m
                    need = other == 0 or any(first_n(p, stage) == name and int(p[stage + 1]) == other
                                             for p in paths[2:])
                    if need:
                        inters[stage][other][name] = bridge(stage, other, out)
    outputs = [classify(int(p[-1]), inters[n_stages - 1][int(p[-1])]['.'.join(p)]) for p in paths]
    return outputs, inters[1:]


def official_fcfd_loss(method, student, teacher, images, labels, paths, epoch, weight_l2, mix, T):
    """train_one_epoch's total loss (0-based ``epoch``) for the given sampled paths, in torch as the official."""
    from distiller_zoo.FCFD import Stages
    stages = [Stages(teacher), Stages(student)]
    nets = [teacher, student]

    def bridge(stage, target, x):
        return (method.to_student if target == 1 else method.to_teacher)[stage - 1](x)

    n = stages[0].n
    outputs, inters = official_meta_forward(lambda m, j, x: stages[m].functions[0](x) if j == 0 else
                                            stages[m].step(j, x), lambda m, x: nets[m].forward_head(x), bridge,
                                            images, [[0] * n, [1] * n] + paths, n)

    def kl(src, target):
        return torch.nn.functional.kl_div(torch.log_softmax(src / T, 1), torch.softmax(target.detach() / T, 1),
                                          reduction='batchmean') * T * T
    total = 0
    for stage in range(len(inters)):
        values = list(inters[stage][0].values())
        target, loss_l2 = values[0].detach(), 0
        for val in values[1:]:
            loss_l2 += torch.nn.functional.mse_loss(val, target)
        if stage == len(inters) - 1:
            pooled = torch.nn.functional.adaptive_avg_pool2d(torch.relu(target), 1).view(images.shape[0], -1)
            for val in values[1:]:
                val = torch.nn.functional.adaptive_avg_pool2d(torch.relu(val), 1).view(images.shape[0], -1)
                loss_l2 += torch.nn.functional.mse_loss(val, pooled)
        if epoch < 20:
            loss_l2 = min(1, (epoch + 1) / 20) * loss_l2
        total += loss_l2 * weight_l2
    total += torch.nn.functional.cross_entropy(outputs[1], labels) + kl(outputs[1], outputs[0])
    for output in outputs[2:]:
        total += mix * kl(output, outputs[0])
    return total


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_fcfd_total_loss_and_gradients_match_the_official_meta_model(seed):
    """The method's terms on a resnet20 teacher and resnet8 student (float64, tiny images) against meta.py's routing
    and main.py's loss with the same sampled paths: the same value and the same gradients of the student's and the
    bridges' parameters; the teacher gets no gradient and keeps its weights and statistics."""
    from types import SimpleNamespace

    from distiller_zoo.teacher import probe_networks, run_teacher
    from models.registry import ALL_MODELS
    args = parse('fcfd', '--fcfd_mix', '0.2', model_t='resnet20', model_s='resnet8')
    torch.manual_seed(seed)
    student = ALL_MODELS['resnet8'](num_classes=5)
    teacher = ALL_MODELS['resnet20'](num_classes=5).eval().requires_grad_(False)
    probe_s, probe_t = probe_networks(student, teacher, False, 8)
    method = DISTILLERS['fcfd'](args, student, teacher, probe_s, probe_t, None)
    student.double(), teacher.double(), method.double()
    batch = SimpleNamespace(images=torch.randn(4, 3, 8, 8, dtype=torch.float64), targets=torch.tensor([0, 1, 2, 4]))
    out_t = run_teacher(teacher, batch, method.teacher_request())
    teacher_state = {k: v.clone() for k, v in teacher.state_dict().items()}
    params = list(student.parameters()) + list(method.parameters())

    method.draws.seed = seed  # the run's seed: the paths of its first step of epoch 5
    paths = random.Random(step_seed(seed, 5, PATH_STREAM, 1)).sample(candidate_paths(4, 'bi'), 2)
    _, terms = method.forward_train(student, batch, out_t, epoch=5)
    assert set(terms) == {'ce', 'kd', 'fcfd_mix', 'fcfd'}
    # each bridge ran at most once (the official computes each named map once): its BN counted one batch at most
    assert all(b[1].num_batches_tracked.item() == 1 for b in method.to_teacher)
    assert all(b[1].num_batches_tracked.item() <= 1 for b in method.to_student)
    mine = sum(terms.values())
    grads = torch.autograd.grad(mine, params, allow_unused=True)
    reference = official_fcfd_loss(method, student, teacher, batch.images, batch.targets, paths, 4, 5.0, 0.2, 4.0)
    expected = torch.autograd.grad(reference, params, allow_unused=True)
    assert mine.item() == pytest.approx(reference.item(), rel=1e-12)
    for a, b in zip(grads, expected):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert all(p.grad is None for p in teacher.parameters()) and not teacher.training
    assert all(torch.equal(v, teacher_state[k]) for k, v in teacher.state_dict().items())


def small_fcfd(*flags, model_t='resnet20', model_s='resnet8'):
    from distiller_zoo.teacher import probe_networks
    from models.registry import ALL_MODELS
    args = parse('fcfd', *flags, model_t=model_t, model_s=model_s)
    torch.manual_seed(0)
    student = ALL_MODELS[model_s](num_classes=5)
    teacher = ALL_MODELS[model_t](num_classes=5).eval().requires_grad_(False)
    probe_s, probe_t = probe_networks(student, teacher, False, 8)
    return DISTILLERS['fcfd'](args, student, teacher, probe_s, probe_t, None), student, teacher


def test_fcfd_paths_depend_only_on_the_seed_epoch_and_step():
    """The mixed paths of a step are drawn from (seed, epoch, step) alone, not from Python's global generator: a
    run resumed at epoch 2 (a fresh method) takes the paths the uninterrupted run took there, whatever else drew
    random numbers before (the official's global draws would continue from epoch 1's)."""
    from types import SimpleNamespace

    from distiller_zoo.teacher import run_teacher

    def epoch_paths(method, student, teacher, epochs):
        taken, run_mixed = [], method.run_mixed
        method.run_mixed = lambda student, path, *rest: (taken.append(path), run_mixed(student, path, *rest))[1]
        batch = SimpleNamespace(images=torch.randn(4, 3, 8, 8), targets=torch.tensor([0, 1, 2, 4]))
        out_t = run_teacher(teacher, batch, method.teacher_request())
        random.seed(0)  # as a run's start seeds Python's generator
        for epoch in epochs:
            for _ in range(4):
                method.forward_train(student, batch, out_t, epoch=epoch)
                random.random()  # other draws in between change nothing
        return taken
    whole = epoch_paths(*small_fcfd('--fcfd_paths', '1'), [1, 2])
    resumed = epoch_paths(*small_fcfd('--fcfd_paths', '1'), [2])
    assert whole[4:] == resumed and whole[:4] != whole[4:]
    assert len(set(map(tuple, whole))) > 1  # the draws vary from step to step


def test_fcfd_mixed_paths_leave_the_students_bn_statistics_alone():
    """Teacher-to-student paths run the student's later stages in train mode (batch statistics) without moving its
    running statistics, as the official GhostForward: after a step they are those of the student's own pass."""
    from types import SimpleNamespace

    from distiller_zoo.teacher import run_teacher
    from models.features import run_network
    method, student, teacher = small_fcfd('--fcfd_path_type', 't2s')
    batch = SimpleNamespace(images=torch.randn(4, 3, 8, 8), targets=torch.tensor([0, 1, 2, 4]))
    out_t = run_teacher(teacher, batch, method.teacher_request())
    start = {k: v.clone() for k, v in student.state_dict().items()}
    student.train()
    _, terms = method.forward_train(student, batch, out_t, epoch=1)
    assert 'fcfd_mix' in terms and terms['fcfd_mix'].requires_grad
    after_method = {k: v.clone() for k, v in student.state_dict().items()}
    student.load_state_dict(start)
    run_network(student, batch.images, True, False, True)
    assert all(torch.equal(v, student.state_dict()[k]) for k, v in after_method.items())
    assert any(not torch.equal(v, start[k]) for k, v in after_method.items())  # its own pass did move them


def test_fcfd_bridges_follow_the_official_build_bridge():
    method, _, _ = small_fcfd(model_t='resnet32x4', model_s='ShuffleV2')
    # on 8x8 probes each ShuffleV2 map is half as high as resnet32x4's: a stride-2 conv (with a bias) down to the
    # student, a 4x4 transposed conv up to the teacher
    for bridge in method.to_student:
        assert isinstance(bridge[0], torch.nn.Conv2d) and bridge[0].stride == (2, 2) and bridge[0].bias is not None
    for bridge in method.to_teacher:
        assert isinstance(bridge[0], torch.nn.ConvTranspose2d) and bridge[0].kernel_size == (4, 4)
    for bridge in list(method.to_student) + list(method.to_teacher):
        conv, bn = bridge[0], bridge[1]
        assert isinstance(bn, torch.nn.BatchNorm2d) and bn.num_features == conv.out_channels
        assert isinstance(bridge[-1], torch.nn.LeakyReLU)  # both networks' maps here are post-ReLU
    method, _, _ = small_fcfd(model_t='wrn_40_2', model_s='wrn_16_2')
    assert not any(isinstance(b[-1], torch.nn.LeakyReLU) for b in list(method.to_student)[:2])  # WRN block outputs
    assert all(isinstance(b[0], torch.nn.Conv2d) and b[0].stride == (1, 1) and b[0].bias is None
               for b in method.to_student)


def test_fcfd_defaults_per_pair():
    args = parse('fcfd')
    assert (args.gamma, args.alpha, args.beta, args.fcfd_T, args.fcfd_mix, args.fcfd_warmup) == \
        (1.0, 1.0, 5.0, 4.0, 1.0, 20)
    assert (args.fcfd_paths, args.fcfd_path_type) == (2, 'bi')
    assert parse('fcfd', model_t='resnet56', model_s='resnet20').beta == 0.02
    assert parse('fcfd', model_t='resnet32x4', model_s='ShuffleV1').fcfd_T == 8.0
    assert parse('fcfd', model_t='ResNet50', model_s='MobileNetV2').fcfd_T == 8.0
    assert parse('fcfd', model_t='wrn_40_2', model_s='wrn_16_2').fcfd_mix == 0.2
    args = parse('fcfd', model_t='ResNet34', model_s='ResNet18', dataset='imagenet')
    assert (args.beta, args.fcfd_T, args.fcfd_warmup) == (0.02, 1.0, 5)
    assert parse('fcfd', model_t='ResNet50', model_s='MobileNetV1', dataset='imagenet').beta == 5.0


@pytest.mark.parametrize('flags, message', [
    (['--fcfd_T', '0'], '--fcfd_T must be positive'),
    (['--fcfd_mix', '-1'], '--fcfd_mix cannot be negative'),
    (['--fcfd_paths', '-1'], '--fcfd_paths cannot be negative'),
    (['--fcfd_warmup', '-1'], '--fcfd_warmup cannot be negative'),
])
def test_fcfd_undefined_settings_are_refused(flags, message):
    with pytest.raises(KDZooError, match=message):
        parse('fcfd', *flags)


@pytest.mark.parametrize('model_t, model_s, flags, message', [
    ('ResNet50', 'resnet8', [], 'fcfd pairs stages one to one, but the student resnet8 has 4 and the teacher '
                                'ResNet50 5'),
    ('hcgnet_A1', 'resnet8', [], 'HCGNet cannot be run from an intermediate stage on'),
    ('resnet20', 'resnet8', ['--fcfd_paths', '5'], '--fcfd_paths 5 is more than the 4 mixed paths'),
    ('resnet20', 'resnet8', ['--fcfd_path_type', 's2t', '--fcfd_paths', '3'], 'more than the 2 mixed paths'),
])
def test_fcfd_pairs_it_cannot_serve_are_refused(model_t, model_s, flags, message):
    with pytest.raises(KDZooError, match=message):
        small_fcfd(*flags, model_t=model_t, model_s=model_s)


# ---------------------------------------------------------------------------------------------- pack

@pytest.mark.slow
def test_pack_equals_the_single_runs(tmp_path, monkeypatch):
    first_digits(monkeypatch, 192, 64)  # runs compared with each other: a part of the digits does
    teacher = random_teacher(tmp_path / 'teacher', 'resnet20', 10)
    common = ['--path_t', teacher, '--dataset', 'digits', '--epochs', '1', '--deterministic', '--print_freq', '5']
    train_student.main([*common, '--model_s', 'resnet8', '--distill', 'itrd:lambda_mutual=0.05,fcfd',
                        '--save_root', str(tmp_path / 'pack')])
    single_runs(common, [('resnet8', 'itrd', '--lambda_mutual', '0.05'), ('resnet8', 'fcfd')], tmp_path / 'single')
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

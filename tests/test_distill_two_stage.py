"""AB, FT and FSP, the two-stage methods: each loss against an independent numpy formula (values) and
float64 finite differences or the analytic derivative (gradients), their modules built for real model
pairs, the modes and optimiser sets of both stages, and the init stage end to end: what it trains, its
checkpoint, and resuming after it."""
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn as nn

import train_student
from distiller_zoo import AB, ABLoss, FSP, FT, Connector, FactorTransfer, FSPDistiller, Paraphraser, Translator
from models.features import run_network
from helper.errors import KDZooError
from engine.loop import Trainer
from engine.objective import DistillObjective, InitStageObjective
from models import imagenet_model_dict, model_dict

from conftest import shared_digits_teacher, small_digits_fixture


def rng_tensor(rng, *shape, requires_grad=False):
    return torch.tensor(rng.standard_normal(shape), dtype=torch.float64, requires_grad=requires_grad)


def avg_pool_np(x, size):
    """Average over non-overlapping blocks, down to size x size (the sizes divide)."""
    n, c, h, w = x.shape
    return x.reshape(n, c, size, h // size, size, w // size).mean(axis=(3, 5))


# ---- ABLoss ------------------------------------------------------------------------------------------

def ab_reference(g_s, g_t, margin):
    """Per-layer loss and d(total)/d(g_s) from the AB formula, in numpy."""
    values, grads = [], []
    for i, (s, t) in enumerate(zip(g_s, g_t)):
        scale = 2.0 ** (i - len(g_s) + 1) / s.shape[0] * 3 / 1000
        neg = (t <= 0) & (s > -margin)  # teacher off, student not below -m
        pos = (t > 0) & (s <= margin)   # teacher on, student not above +m
        values.append(scale * (np.sum((s[neg] + margin) ** 2) + np.sum((s[pos] - margin) ** 2)))
        grads.append(scale * (2 * (s + margin) * neg + 2 * (s - margin) * pos))
    return values, grads


def test_ab_loss_hand_example():
    # margin 1, one layer (weight 1, batch 1): only -0.5 (t = 0 counts as off) and 0.5 (t on) are wrong,
    # each by 0.5, so the sum is 0.25 + 0.25; s = -1 with t off and s = 1 with t on sit on the margin.
    s = torch.tensor([[[[-2.0, -0.5, -1.0], [0.5, 2.0, 1.0]]]])
    t = torch.tensor([[[[-1.0, 0.0, -3.0], [1.0, 1.0, 2.0]]]])
    loss, = ABLoss(1)([s], [t])
    assert loss.item() == pytest.approx(0.5 * 3 / 1000)


@pytest.mark.parametrize('margin', [1.0, 0.5])
def test_ab_loss_value_and_gradient(margin):
    rng = np.random.default_rng(0)
    shapes = [(3, 2, 4, 4), (3, 4, 2, 2), (3, 5, 1, 1)]
    g_s = [rng_tensor(rng, *shape, requires_grad=True) for shape in shapes]
    g_t = [rng_tensor(rng, *shape) for shape in shapes]
    g_t[0].view(-1)[:5] = 0.0  # the teacher exactly at zero counts as off
    losses = ABLoss(len(shapes), margin=margin)(g_s, g_t)
    want_values, want_grads = ab_reference([s.detach().numpy() for s in g_s], [t.numpy() for t in g_t], margin)
    assert len(losses) == 3
    for got, want in zip(losses, want_values):
        assert got.item() == pytest.approx(want, rel=1e-12)
    assert want_values[2] > 0 and want_values[0] > 0
    grads = torch.autograd.grad(sum(losses), g_s)
    for got, want in zip(grads, want_grads):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-12, atol=1e-15)


def test_ab_loss_is_computed_in_fp32_from_bf16_maps():
    rng = np.random.default_rng(1)
    s, t = rng_tensor(rng, 2, 3, 8, 8).float(), rng_tensor(rng, 2, 3, 8, 8).float()
    loss, = ABLoss(1)([s.bfloat16()], [t.bfloat16()])
    assert loss.dtype == torch.float32
    want, = ABLoss(1)([s.bfloat16().float()], [t.bfloat16().float()])
    assert loss.item() == want.item()


# ---- FactorTransfer -----------------------------------------------------------------------------------

def ft_reference(f_s, f_t, p1, p2):
    if f_s.shape[2] > f_t.shape[2]:
        f_s = avg_pool_np(f_s, f_t.shape[2])
    elif f_s.shape[2] < f_t.shape[2]:
        f_t = avg_pool_np(f_t, f_s.shape[2])

    def factor(f):
        spatial = (f ** p1).mean(axis=1).reshape(f.shape[0], -1)
        return spatial / np.maximum(np.sqrt((spatial ** 2).sum(axis=1, keepdims=True)), 1e-12)
    diff = factor(f_s) - factor(f_t)
    return np.abs(diff).mean() if p2 == 1 else (diff ** p2).mean()


@pytest.mark.parametrize('s_size, t_size, p1, p2', [(4, 4, 2, 1), (8, 4, 2, 1), (2, 4, 2, 1), (4, 4, 1, 2)])
def test_factor_transfer_value_and_gradient(s_size, t_size, p1, p2):
    rng = np.random.default_rng(2)
    f_s = rng_tensor(rng, 3, 5, s_size, s_size, requires_grad=True)
    f_t = rng_tensor(rng, 3, 7, t_size, t_size)
    loss = FactorTransfer(p1, p2)(f_s, f_t)
    assert loss.item() == pytest.approx(ft_reference(f_s.detach().numpy(), f_t.numpy(), p1, p2), rel=1e-12)
    assert torch.autograd.gradcheck(lambda x: FactorTransfer(p1, p2)(x, f_t), (f_s,), eps=1e-6, atol=1e-8)


def test_paraphraser_and_translator_layout():
    paraphraser = Paraphraser((2, 64, 8, 8))
    translator = Translator((2, 48, 8, 8), (2, 64, 8, 8))
    convs = [m for m in paraphraser.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    assert [(m.in_channels, m.out_channels) for m in convs] == [(64, 64), (64, 32), (32, 32), (32, 32),
                                                                (32, 64), (64, 64)]
    assert not any(isinstance(m, nn.BatchNorm2d) for m in paraphraser.modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in translator.modules()) == 3
    assert all(m.negative_slope == 0.1 for m in translator.modules() if isinstance(m, nn.LeakyReLU))
    # RepDistiller's parameter names, so its state dicts load
    assert {'encoder.0.weight', 'encoder.6.bias', 'decoder.3.weight'} <= set(paraphraser.state_dict())
    assert {'encoder.1.running_mean', 'encoder.7.weight'} <= set(translator.state_dict())
    x = torch.randn(2, 64, 8, 8)
    factor, reconstruction = paraphraser(x)
    assert factor.shape == (2, 32, 8, 8) and reconstruction.shape == x.shape
    assert torch.equal(paraphraser(x, is_factor=True), factor)
    assert translator(torch.randn(2, 48, 8, 8)).shape == (2, 32, 8, 8)


# ---- FSP ----------------------------------------------------------------------------------------------

def fsp_reference(g_s, g_t):
    def matrices(g):
        out = []
        for bottom, top in zip(g, g[1:]):
            if bottom.shape[2] > top.shape[2]:
                bottom = avg_pool_np(bottom, top.shape[2])
            elif bottom.shape[2] < top.shape[2]:
                top = avg_pool_np(top, bottom.shape[2])
            n, c_top, c_bottom = bottom.shape[0], top.shape[1], bottom.shape[1]
            g_matrix = np.zeros((n, c_top, c_bottom))
            for k in range(n):
                for j in range(c_top):
                    for i in range(c_bottom):
                        g_matrix[k, j, i] = np.mean(top[k, j] * bottom[k, i])
            out.append(g_matrix)
        return out
    return [np.mean((s - t) ** 2) for s, t in zip(matrices(g_s), matrices(g_t))]


def test_fsp_value_and_gradient():
    rng = np.random.default_rng(3)
    s_shapes = [(2, 2, 8, 8), (2, 3, 8, 8), (2, 4, 4, 4), (2, 3, 2, 2)]
    t_shapes = [(2, 2, 4, 4), (2, 3, 2, 2), (2, 4, 4, 4), (2, 3, 4, 4)]  # other sizes, same channels
    g_s = [rng_tensor(rng, *shape, requires_grad=True) for shape in s_shapes]
    g_t = [rng_tensor(rng, *shape) for shape in t_shapes]
    criterion = FSP(s_shapes, t_shapes)
    losses = criterion(g_s, g_t)
    want = fsp_reference([s.detach().numpy() for s in g_s], [t.numpy() for t in g_t])
    assert len(losses) == 3
    for got, value in zip(losses, want):
        assert got.item() == pytest.approx(value, rel=1e-12)
    assert [tuple(m.shape) for m in FSP.compute_fsp(g_s)] == [(2, 3, 2), (2, 4, 3), (2, 3, 4)]
    assert torch.autograd.gradcheck(lambda *s: sum(criterion(list(s), g_t)), tuple(g_s), eps=1e-6, atol=1e-8)


# ---- modules for real model pairs -----------------------------------------------------------------------

def method_args(model_s='resnet8', dataset='cifar100', learning_rate=0.05):
    return SimpleNamespace(gamma=1.0, alpha=0.0, beta=1.0, kd_T=4.0, model_s=model_s, dataset=dataset,
                           learning_rate=learning_rate)


@torch.no_grad()
def probes(name_s, name_t, preact):
    """Both networks and their eval-mode outputs on two random images, as teacher.probe_networks makes them."""
    student, teacher = model_dict[name_s](num_classes=10).eval(), model_dict[name_t](num_classes=10).eval()
    images = torch.randn(2, 3, 32, 32)
    return student, teacher, run_network(student, images, True, preact), run_network(teacher, images, True, preact)


def build_method(cls, name_s, name_t):
    student, teacher, probe_s, probe_t = probes(name_s, name_t, cls.preact)
    return cls(method_args(name_s), student, teacher, probe_s, probe_t, None), student, teacher, probe_s, probe_t


def training_outputs(cls, student, teacher):
    """The student's outputs (with gradients) and the teacher's (without) on four random images, with the
    features ``cls`` takes (pre- or post-ReLU)."""
    images = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        out_t = run_network(teacher, images, True, cls.preact)
    return run_network(student, images, True, cls.preact), out_t


@pytest.mark.parametrize('name_s, name_t, kinds', [
    ('resnet8x4', 'resnet32x4', [nn.Identity] * 3),       # same widths and sizes
    ('wrn_16_2', 'wrn_40_2', [nn.Identity] * 3),
    ('resnet8', 'resnet8x4', [nn.Conv2d] * 3),            # 16/32/64 -> 64/128/256 channels: 1x1 convs
    ('ShuffleV2_0_5', 'wrn_40_2', [nn.ConvTranspose2d] * 3),  # half the height: transposed convs
])
def test_ab_connector_for_model_pairs(name_s, name_t, kinds):
    method, student, _, probe_s, probe_t = build_method(AB, name_s, name_t)
    connectors = method.connector.connectors
    assert [type(getattr(c, 'conv', c)) for c in connectors] == kinds  # ConvReg: conv, then BN, no ReLU
    assert all(c.use_relu is False for c in connectors if not isinstance(c, nn.Identity))
    method.connector.train()
    out = method.connector(probe_s.feats[1:-1])
    assert [f.shape for f in out] == [f.shape for f in probe_t.feats[1:-1]]
    assert method.default_weights == (1.0, 0.0, 1.0) and AB.preact and AB.needs_feats


def test_ab_init_loss_reaches_connector_and_student_but_main_loss_is_zero():
    method, student, teacher, _, _ = build_method(AB, 'resnet8', 'resnet8x4')
    out_s, out_t = training_outputs(AB, student, teacher)
    init_loss = method.init_loss(out_s, out_t, None)
    # the same number from the numpy formula on the connected maps
    connected = [f.detach().double().numpy() for f in method.connector(out_s.feats[1:-1])]
    want, _ = ab_reference(connected, [f.double().numpy() for f in out_t.feats[1:-1]], 1.0)
    assert init_loss.item() == pytest.approx(sum(want), rel=1e-5)
    init_loss.backward()
    assert all(p.grad is not None for p in method.connector.parameters())
    assert student.conv1.weight.grad is not None and student.fc.weight.grad is None
    batch = SimpleNamespace(targets=torch.zeros(4, dtype=torch.long))
    terms = method.losses(out_s, out_t, batch, epoch=1)
    assert set(terms) == {'ce', 'abound'} and terms['abound'].item() == 0.0


def test_ab_refuses_networks_with_different_stage_counts_or_sizes():
    with pytest.raises(KDZooError, match='student has 3 and the teacher 4'):
        build_method(AB, 'resnet8', 'vgg8')
    with pytest.raises(KDZooError, match='cannot map a student feature map'):
        Connector([(2, 8, 4, 4)], [(2, 8, 16, 16)])


@pytest.mark.parametrize('name_s, name_t, factor_channels', [('resnet8x4', 'resnet32x4', 128),
                                                             ('wrn_16_2', 'wrn_40_2', 64)])
def test_ft_modules_for_model_pairs(name_s, name_t, factor_channels):
    method, student, teacher, probe_s, probe_t = build_method(FT, name_s, name_t)
    factor_t = method.paraphraser(probe_t.feats[-2], is_factor=True)
    factor_s = method.translator.eval()(probe_s.feats[-2])
    assert factor_t.shape == factor_s.shape == (2, factor_channels, 8, 8)
    assert method.default_weights == (1.0, 0.0, 200.0) and not FT.preact


def test_ft_main_loss_trains_translator_and_student_but_not_paraphraser():
    method, student, teacher, _, _ = build_method(FT, 'resnet8', 'resnet20')
    out_s, out_t = training_outputs(FT, student, teacher)
    loss = method.method_loss(out_s, out_t, None, epoch=1)
    with torch.no_grad():
        want = ft_reference(method.translator(out_s.feats[-2]).double().numpy(),
                            method.paraphraser.encoder(out_t.feats[-2]).double().numpy(), 2, 1)
    assert loss.item() == pytest.approx(want, rel=1e-5)
    loss.backward()
    assert all(p.grad is not None for p in method.translator.parameters())
    assert student.conv1.weight.grad is not None
    assert all(p.grad is None for p in method.paraphraser.parameters())
    # init stage: the paraphraser's reconstruction error of the teacher's last map
    init_loss = method.init_loss(out_s, out_t, None)
    f_t = out_t.feats[-2].double().numpy()
    with torch.no_grad():
        reconstruction = method.paraphraser.decoder(method.paraphraser.encoder(out_t.feats[-2])).double().numpy()
    assert init_loss.item() == pytest.approx(np.mean((reconstruction - f_t) ** 2), rel=1e-5)


def test_ft_init_learning_rate():
    method, *_ = build_method(FT, 'resnet8', 'resnet20')
    for name in ('resnet8', 'resnet110', 'resnet8x4', 'resnet32x4', 'wrn_16_1', 'wrn_40_2'):
        assert method.init_learning_rate(method_args(name)) == 0.01
    assert method.init_learning_rate(method_args('resnet8', learning_rate=0.001)) == 0.001  # kdzoo: the lower
    for name in ('MobileNetV2', 'ShuffleV1', 'vgg8', 'ResNet50'):
        assert method.init_learning_rate(method_args(name, learning_rate=0.02)) == 0.02
    assert 'ResNet18' in imagenet_model_dict
    assert method.init_learning_rate(method_args('ResNet18', 'imagenet', learning_rate=0.1)) == 0.1
    for cls in (AB, FSPDistiller):  # RepDistiller's helper/pretrain.py: --learning_rate for the others
        other, *_ = build_method(cls, 'resnet8', 'resnet20')
        assert other.init_learning_rate(method_args('resnet8', learning_rate=0.05)) == 0.05


@pytest.mark.parametrize('name_s, name_t', [('resnet32', 'resnet110'), ('resnet8x4', 'resnet32x4'),
                                            ('wrn_16_2', 'wrn_40_2')])
def test_fsp_builds_for_pairs_of_equal_widths(name_s, name_t):
    method, student, teacher, probe_s, probe_t = build_method(FSPDistiller, name_s, name_t)
    losses = method.criterion(probe_s.feats[:-1], probe_t.feats[:-1])
    assert len(losses) == 3 and all(torch.isfinite(loss) and loss > 0 for loss in losses)
    assert method.default_weights == (1.0, 0.0, 50.0) and method.trainable_modules() == []


@pytest.mark.parametrize('name_s, name_t, layer, s_c, t_c', [('wrn_40_1', 'wrn_40_2', 'f1', 16, 32),
                                                             ('resnet8', 'resnet32x4', 'f0', 16, 32)])
def test_fsp_names_the_layer_whose_channels_differ(name_s, name_t, layer, s_c, t_c):
    with pytest.raises(KDZooError, match=f'FSP needs matching channel counts at every feature map, but {layer} '
                                         f'has {s_c} channels in the student and {t_c} in the teacher'):
        build_method(FSPDistiller, name_s, name_t)


# ---- modes and optimiser sets of the two stages ----------------------------------------------------------

def training_flags(module):
    return {m.training for m in module.modules()}


@pytest.mark.parametrize('cls, name_s, name_t', [(AB, 'resnet8', 'resnet8x4'), (FT, 'resnet8', 'resnet20'),
                                                 (FSPDistiller, 'resnet8', 'resnet20')])
def test_stage_modes_and_trained_modules(cls, name_s, name_t):
    method, student, teacher, _, _ = build_method(cls, name_s, name_t)
    main = DistillObjective(student, teacher, method)
    init = InitStageObjective(student, teacher, method)
    feature_modules = student.get_feat_modules()
    own = {AB: 'connector', FT: 'paraphraser', FSPDistiller: None}[cls]

    init.train()
    init_ids = {id(p) for m in init.trainable_modules() for p in m.parameters()}
    if cls is FT:
        assert init_ids == {id(p) for p in method.paraphraser.parameters()}
        assert training_flags(student) == {False}
    else:
        expected = {id(p) for p in feature_modules.parameters()}
        if cls is AB:
            expected |= {id(p) for p in method.connector.parameters()}
        assert init_ids == expected and not {id(p) for p in student.fc.parameters()} & init_ids
        assert training_flags(feature_modules) == {True}
    if own:
        assert training_flags(getattr(method, own)) == {True}
    assert training_flags(teacher) == {False}

    main.train()
    assert training_flags(student) == {True} and training_flags(teacher) == {False}
    if own:
        assert training_flags(getattr(method, own)) == {False}  # kept but frozen in the main stage
    main_ids = {id(p) for m in method.trainable_modules() for p in m.parameters()}
    assert main_ids == ({id(p) for p in method.translator.parameters()} if cls is FT else set())
    if cls is FT:
        assert training_flags(method.translator) == {True}


# ---- end to end on (a small slice of) the digits -----------------------------------------------------------

# 192 training and 64 test digits: the stages' mechanics need no more, and the runs stay fast
small_digits = small_digits_fixture(192, 64)


@pytest.fixture(scope='module')
def teacher_path(tmp_path_factory, digits_once):
    return shared_digits_teacher(tmp_path_factory, digits_once, 'resnet20', '--epochs', '1', '--precision', 'fp32')


# resnet8's maps match resnet20's, so AB's connector would be all identity: AB runs ShuffleV2_0_5, whose
# half-size maps need transposed-conv connectors with weights to train.
STUDENT = {'factor': 'resnet8', 'fsp': 'resnet8', 'abound': 'ShuffleV2_0_5'}


def student_argv(name, teacher_path, root, *extra):
    return ['--path_t', teacher_path, '--distill', name, '--model_s', STUDENT[name], '--dataset', 'digits',
            '--init_epochs', '1', '--epochs', '1', '--deterministic', '--precision', 'fp32',
            '--skip-validation', '--save_root', str(root), *extra]


def run_folder(root):
    folder = root / 'students' / 'models'
    return folder / os.listdir(folder)[0]


def load(path):
    return torch.load(path, weights_only=True)


@pytest.fixture(scope='module')
def two_stage_runs(teacher_path, tmp_path_factory):
    """One uninterrupted run per method: the objective's state when built, after the init stage, at the end."""
    runs = {}

    def run(name):
        if name not in runs:
            root = tmp_path_factory.mktemp(name)
            built = {}

            def build_and_remember(*args, **kwargs):
                objective = build_objective(*args, **kwargs)
                built['model'] = {k: v.clone() for k, v in objective.model.state_dict().items()}
                built['method'] = {k: v.clone() for k, v in objective.resume_state().items()}
                return objective
            build_objective = train_student.build_objective
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(train_student, 'build_objective', build_and_remember)
                state = train_student.main(student_argv(name, teacher_path, root))
            folder = run_folder(root)
            init = load(folder / f'{STUDENT[name]}_init.pth')
            last = load(folder / f'{STUDENT[name]}_last.pth')
            runs[name] = dict(root=root, state=state, built=built,
                              init=dict(model=init['model'], method=init['kdzoo']['objective'],
                                        epoch=init['epoch']),
                              last=dict(model=last['model'], method=last['kdzoo']['objective']))
        return runs[name]
    return run


def changed(before, after, prefix):
    """Keys under ``prefix`` whose tensors differ between two state dicts (all of them must exist in both)."""
    keys = [k for k in before if k.startswith(prefix)]
    assert keys, prefix
    return {k for k in keys if not torch.equal(before[k], after[k])}


def student_parts(model_name):
    """State-dict prefixes of a model's feature modules, and of its classifier."""
    model = model_dict[model_name](num_classes=10)
    names = {id(m): n + '.' for n, m in model.named_modules()}
    return tuple(names[id(m)] for m in model.get_feat_modules()), names[id(model.get_classifier())]


def learnable(state, prefix):
    return {k for k in state if k.startswith(prefix) and k.endswith(('weight', 'bias'))}


@pytest.mark.parametrize('name', ['factor', 'abound', 'fsp'])
def test_init_stage_trains_exactly_the_init_modules(name, two_stage_runs):
    run = two_stage_runs(name)
    built, init, last = run['built'], run['init'], run['last']
    assert init['epoch'] == 1 and [r['epoch'] for r in run['state']['history']] == [1]
    assert set(built['method']) == set(init['method']) == set(last['method'])
    if name == 'factor':
        # init: the paraphraser alone; main: the translator and the student, the paraphraser frozen
        assert changed(built['method'], init['method'], 'method.paraphraser.') == \
            learnable(built['method'], 'method.paraphraser.')
        assert not changed(built['method'], init['method'], 'method.translator.')
        assert not changed(built['model'], init['model'], '')  # student in eval: not even BN statistics
        assert not changed(init['method'], last['method'], 'method.paraphraser.')
        assert changed(init['method'], last['method'], 'method.translator.')
    else:
        # init: the student's feature modules (and AB's connector), never the classifier
        features, classifier = student_parts(STUDENT[name])
        moved = changed(built['model'], init['model'], '')
        assert moved and all(k.startswith(features) for k in moved)
        assert learnable(built['model'], 'conv1.') <= moved
        assert not changed(built['model'], init['model'], classifier)
        if name == 'abound':
            assert changed(built['method'], init['method'], 'method.connector.') == \
                set(k for k in built['method'] if k.startswith('method.connector.'))
            # main stage: the connector is kept in eval, so neither its weights nor its BN statistics move
            assert not changed(init['method'], last['method'], 'method.connector.')
        else:
            assert built['method'] == {}
    assert changed(init['model'], last['model'], student_parts(STUDENT[name])[1])  # main: the whole student


def test_resume_after_the_init_stage_continues_with_the_main_stage(two_stage_runs, teacher_path, tmp_path,
                                                                   monkeypatch, capsys):
    whole = two_stage_runs('factor')
    original_save = Trainer.save

    def stop_after_init_stage(self, epoch, top1, is_best):
        original_save(self, epoch, top1, is_best)
        if self.stage == 'init':
            raise KeyboardInterrupt
    monkeypatch.setattr(Trainer, 'save', stop_after_init_stage)
    with pytest.raises(KeyboardInterrupt):
        train_student.main(student_argv('factor', teacher_path, tmp_path))
    folder = run_folder(tmp_path)
    assert (folder / 'resnet8_init.pth').exists() and not (folder / 'resnet8_last.pth').exists()
    monkeypatch.setattr(Trainer, 'save', original_save)
    capsys.readouterr()

    state = train_student.main(student_argv('factor', teacher_path, tmp_path, '--resume', 'auto'))
    assert 'resumed init stage' in capsys.readouterr().out
    assert [r['epoch'] for r in state['history']] == [1]
    assert state['history'][-1]['train_loss'] == whole['state']['history'][-1]['train_loss']
    last = load(folder / 'resnet8_last.pth')
    for key, value in whole['last']['model'].items():
        assert torch.equal(last['model'][key], value), key
    for key, value in whole['last']['method'].items():
        assert torch.equal(last['kdzoo']['objective'][key], value), key

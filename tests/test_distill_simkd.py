"""SimKD, SRRL and SemCKD (the SimKD repo's methods): losses, logits and gradients against NumPy written
from the formulas, the frozen teacher classifier, SimKD's deployed network read back by tools/eval.py,
SemCKD's attention and its dropped last batch, the one-line errors, and the SimKD repo's import names."""
import json
import os
import pathlib
import shutil

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import tools.eval
import train_student
from distiller_zoo.teacher import probe_networks
from models.features import NetOutput, run_network
from dataset import build_data
from distiller_zoo import DISTILLERS
from distiller_zoo.base import kd_loss
from helper import distributed
from helper.errors import KDZooError
from engine.objective import DistillObjective
from engine.setup import sgd
from models import model_dict
from distiller_zoo.deploy import SimKDNetwork, build_deployed, load_deployed, simkd_from_checkpoint

from conftest import first_digits, numeric_grad, shared_digits_teacher, small_digits_fixture

NUM_CLASSES = 10  # the digits


# ---------------------------------------------------------------------------------- NumPy references

def np_pool(x, h, w):
    """Average pooling of an (N, C, H, W) map to h x w by explicit blocks (H, W multiples of h, w)."""
    n, c, H, W = x.shape
    return x.reshape(n, c, h, H // h, w, W // w).mean(axis=(3, 5))


def np_conv(x, weight):
    """Stride-1 convolution without bias, padding k // 2 (1x1 and 3x3), as shifted channel mixes."""
    k = weight.shape[-1]
    p = k // 2
    padded = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    n, _, h, w = x.shape
    out = np.zeros((n, weight.shape[0], h, w))
    for di in range(k):
        for dj in range(k):
            out += np.einsum('nchw,oc->nohw', padded[:, :, di:di + h, dj:dj + w], weight[:, :, di, dj])
    return out


def np_bn_train(x, scale, shift, eps=1e-5):
    """BatchNorm in training mode: batch mean and biased variance per channel."""
    axes = (0, 2, 3) if x.ndim == 4 else (0,)
    shape = (1, -1, 1, 1) if x.ndim == 4 else (1, -1)
    mean, var = x.mean(axes, keepdims=True), x.var(axes, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * scale.reshape(shape) + shift.reshape(shape)


def relu(x):
    return np.maximum(x, 0)


def softmax(z, axis=-1):
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def params_of(module):
    return {k: v.detach().numpy().copy() for k, v in module.state_dict().items()}


def np_simkd_transfer(x, p):
    """The SimKD repo's projector: (1x1 conv, BN, ReLU), (3x3 conv, BN, ReLU), (1x1 conv, BN, ReLU)."""
    for conv, bn in (('0', '1'), ('3', '4'), ('6', '7')):
        x = relu(np_bn_train(np_conv(x, p[f'{conv}.weight']), p[f'{bn}.weight'], p[f'{bn}.bias']))
    return x


def np_simkd(feat_s, feat_t, p, weight, bias):
    """(MSE of the projected student map to the teacher map, logits of the teacher's classifier), the taller
    map average-pooled to the other's size first."""
    hs, ht = feat_s.shape[2], feat_t.shape[2]
    if hs > ht:
        feat_s = np_pool(feat_s, *feat_t.shape[2:])
    elif hs < ht:
        feat_t = np_pool(feat_t, *feat_s.shape[2:])
    projected = np_simkd_transfer(feat_s, p)
    return np.mean((projected - feat_t) ** 2), projected.mean(axis=(2, 3)) @ weight.T + bias


def np_srrl(feat_s, feat_t, logits_t, p, weight, bias):
    """MSE(transfer(f_s), f_t) + MSE(teacher classifier(transfer(f_s)), teacher logits); transfer = 1x1 conv
    (a matrix on a pooled vector), BN over the batch, ReLU."""
    trans = relu(np_bn_train(feat_s @ p['0.weight'][:, :, 0, 0].T, p['1.weight'], p['1.bias']))
    return np.mean((trans - feat_t) ** 2) + np.mean((trans @ weight.T + bias - logits_t) ** 2)


def randomise_bn(module, seed=3):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for bn in module.modules():
            if isinstance(bn, nn.modules.batchnorm._BatchNorm):
                bn.weight.copy_(torch.rand(bn.num_features, generator=gen, dtype=bn.weight.dtype) + 0.5)
                bn.bias.copy_(torch.randn(bn.num_features, generator=gen, dtype=bn.bias.dtype) * 0.5)


# ---------------------------------------------------------------------------------- building methods

def parse(*argv, model_t='resnet20'):
    return train_student.parse_args(['--path_t', f'somewhere/{model_t}_vanilla/{model_t}_best.pth', *argv])


class HandMadeTeacher:
    """All a method's constructor asks of a teacher: its classifier."""

    def __init__(self, classifier):
        self.classifier = classifier

    def get_classifier(self):
        return self.classifier


def hand_made(name, feat_s, feat_t, classifier, *flags):
    """The method for hand-made feature shapes (probes = one map and one pooled vector per network)."""
    args = parse('--distill', name, *flags)

    def probe(feat):
        return NetOutput(torch.zeros(2, NUM_CLASSES), [feat[:2], feat.mean((2, 3))[:2]] if feat.dim() == 4
                         else [feat[:2]])
    return DISTILLERS[name](args, None, HandMadeTeacher(classifier), probe(feat_s), probe(feat_t), None)


def real_pair(name, model_t, model_s, *flags, num_classes=NUM_CLASSES):
    """(args, student, teacher, method) as train_student.build_objective makes them, on the CPU."""
    args = parse('--distill', name, '--model_s', model_s, '--dataset', 'digits', *flags, model_t=model_t)
    torch.manual_seed(0)
    teacher = model_dict[model_t](num_classes=num_classes).eval()
    student = model_dict[model_s](num_classes=num_classes)
    probe_s, probe_t = probe_networks(student, teacher, DISTILLERS[name].preact, 32)
    return args, student, teacher, DISTILLERS[name](args, student, teacher, probe_s, probe_t, None)


class Batch:
    def __init__(self, images, targets):
        self.images, self.targets = images, targets


def random_batch(size, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return Batch(torch.randn(size, 3, 32, 32, generator=gen), torch.randint(0, NUM_CLASSES, (size,), generator=gen))


def one_line_error(build, match=None):
    with pytest.raises(KDZooError) as err:
        build()
    message = str(err.value)
    assert '\n' not in message
    if match:
        assert match in message, message
    return message


# ---------------------------------------------------------------------------------- SimKD: loss, logits

def train_step(method, out_s, out_t, batch, epoch=1):
    """``method.forward_train`` with a stand-in student whose forward returns ``out_s``'s features and logits."""
    def student(images, is_feat=False, preact=False):
        return (out_s.feats, out_s.logits) if is_feat else out_s.logits
    return method.forward_train(student, batch, out_t, epoch)


@pytest.mark.parametrize('s_size, t_size', [(4, 2), (2, 4), (2, 2)], ids=['student-taller', 'teacher-taller', 'same'])
def test_simkd_loss_logits_and_gradients_match_numpy(s_size, t_size):
    gen = torch.Generator().manual_seed(s_size * 10 + t_size)
    feat_s = torch.randn(2, 3, s_size, s_size, generator=gen, dtype=torch.float64)
    feat_t = torch.randn(2, 4, t_size, t_size, generator=gen, dtype=torch.float64).relu()
    classifier = nn.Linear(4, 5).double()
    method = hand_made('simkd', feat_s, feat_t, classifier, '-f', '2').double().train()
    assert (method.gamma, method.alpha, method.beta) == (0.0, 0.0, 1.0)  # the SimKD repo's -c 0 -d 0 -b 1
    assert method.pool_to == ((t_size, t_size) if s_size > t_size else None)
    randomise_bn(method.projector)
    p = params_of(method.projector.transfer)
    w, b = classifier.weight.detach().numpy(), classifier.bias.detach().numpy()

    x = feat_s.clone().requires_grad_(True)
    out_s = NetOutput(torch.randn(2, 5, generator=gen, dtype=torch.float64, requires_grad=True), [x, None])
    out_t = NetOutput(torch.randn(2, 5, generator=gen, dtype=torch.float64), [feat_t, None])
    own_logits = out_s.logits
    logits_trained, terms = train_step(method, out_s, out_t, Batch(None, torch.tensor([0, 3])))
    mse, logits = np_simkd(feat_s.numpy(), feat_t.numpy(), p, w, b)

    # -c 0 -d 0 -b 1: the MSE is the whole loss (the CE term is weighted 0, no KD term)
    assert set(terms) == {'ce', 'simkd'} and float(terms['ce'].detach()) == 0.0
    assert float(sum(terms.values()).detach()) == pytest.approx(mse, rel=1e-10)
    # the logits (training accuracy) are the teacher classifier's on the pooled projected map
    assert logits_trained is not own_logits
    np.testing.assert_allclose(logits_trained.detach().numpy(), logits, rtol=1e-10, atol=1e-12)

    sum(terms.values()).backward()
    np.testing.assert_allclose(x.grad.numpy(), numeric_grad(lambda f: np_simkd(f, feat_t.numpy(), p, w, b)[0],
                                                            feat_s.numpy()), rtol=1e-5, atol=1e-9)
    assert own_logits.grad is None or float(own_logits.grad.abs().sum()) == 0.0  # CE weighted 0: no gradient

    def loss_of_first_conv(weight):
        return np_simkd(feat_s.numpy(), feat_t.numpy(), dict(p, **{'0.weight': weight}), w, b)[0]
    np.testing.assert_allclose(method.projector.transfer[0].weight.grad.numpy(),
                               numeric_grad(loss_of_first_conv, p['0.weight']), rtol=1e-5, atol=1e-9)
    assert classifier.weight.grad is None  # the MSE never reaches the teacher's classifier


def test_simkd_ce_and_kd_act_on_the_students_own_logits_when_weighted():
    gen = torch.Generator().manual_seed(7)
    feat_s, feat_t = torch.randn(4, 3, 2, 2, generator=gen), torch.randn(4, 4, 2, 2, generator=gen)
    method = hand_made('simkd', feat_s, feat_t, nn.Linear(4, 5), '-c', '0.5', '-d', '2', '-b', '3').train()
    own, logits_t = torch.randn(4, 5, generator=gen), torch.randn(4, 5, generator=gen)
    targets = torch.tensor([0, 1, 2, 4])
    out_s = NetOutput(own.clone(), [feat_s, None])
    logits, terms = train_step(method, out_s, NetOutput(logits_t, [feat_t, None]), Batch(None, targets))
    assert set(terms) == {'ce', 'kd', 'simkd'}
    assert torch.allclose(terms['ce'], 0.5 * F.cross_entropy(own, targets))
    assert torch.allclose(terms['kd'], 2 * kd_loss(own, logits_t, 4.0))
    assert not torch.allclose(logits, own)  # the accuracy logits are the deployed path's


def test_simkd_keeps_the_teacher_classifier_frozen_through_training():
    args, student, teacher, method = real_pair('simkd', 'resnet20', 'resnet8', '-c', '1', '-d', '1', '-b', '1')
    objective = DistillObjective(student, teacher, method).train()
    teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    proj_before = {k: v.clone() for k, v in method.projector.state_dict().items()}
    optimizer = sgd(objective.trainable_modules(), args)
    trained = {id(p) for group in optimizer.param_groups for p in group['params']}
    assert not trained & {id(p) for p in teacher.parameters()}
    assert trained >= {id(p) for p in method.projector.parameters()}
    for step in range(3):
        out = objective.step(random_batch(4, seed=step), epoch=1)
        optimizer.zero_grad()
        sum(out.losses.values()).backward()
        optimizer.step()
    classifier = teacher.get_classifier()
    assert classifier.weight.grad is None and classifier.bias.grad is None
    assert not classifier.weight.requires_grad
    for key, value in teacher.state_dict().items():
        assert torch.equal(value, teacher_before[key]), key
    assert any(not torch.equal(v, proj_before[k]) for k, v in method.projector.state_dict().items())
    # the classifier is the teacher's: neither a parameter of the method nor saved with its projector
    assert set(method.state_dict()) == {f'projector.{k}' for k in method.projector.state_dict()}
    assert set(method.checkpoint_extras()['proj']) == set(method.projector.state_dict())
    assert all(k.startswith('transfer.') for k in method.checkpoint_extras()['proj'])


@pytest.mark.parametrize('model_t, pool_to', [('resnet20', None), ('vgg8', (4, 4))])
def test_simkd_training_accuracy_validation_and_deployment_use_one_path(model_t, pool_to, tmp_path):
    """resnet8's 8x8 map against resnet20's 8x8 and vgg8's 4x4 (pooled to the teacher's size)."""
    args, student, teacher, method = real_pair('simkd', model_t, 'resnet8')
    assert method.pool_to == pool_to
    objective = DistillObjective(student, teacher, method).train()
    batch = random_batch(4)
    out = objective.step(batch, epoch=1)
    classifier = teacher.get_classifier()
    with torch.no_grad():
        feat_s = student(batch.images, is_feat=True)[0][-2]
        if pool_to:  # student 8x8 -> 4x4 by blocks, written out
            feat_s = torch.from_numpy(np_pool(feat_s.numpy(), *pool_to))
        expected = classifier(method.projector.transfer(feat_s).mean((2, 3)))
    assert torch.allclose(out.logits, expected, atol=1e-5)

    objective.eval()
    randomise_bn(method.projector, seed=5)  # a projector that is not near its initialisation
    images = random_batch(3, seed=1).images
    with torch.no_grad():
        predicted = objective.predict(images)
        feats_t = teacher(images, is_feat=True)[0]
        assert torch.allclose(predicted, method.projector(student(images, is_feat=True)[0][-2], feats_t[-2],
                                                          classifier)[2], atol=1e-5)
        assert not torch.allclose(predicted, student(images), atol=1e-3)  # not the student's own classifier
        network, meta = method.deployable(student, teacher)
        assert torch.equal(network.eval()(images), predicted)
        assert meta == dict(kind='simkd', model='resnet8', model_t=model_t, dataset='digits', num_classes=NUM_CLASSES,
                            s_n=64, t_n=classifier.in_features, factor=2, pool_to=pool_to,
                            num_params=sum(p.numel() for p in network.parameters()))
        rebuilt = build_deployed(meta)
        rebuilt.load_state_dict(network.state_dict(), strict=True)
        assert torch.equal(rebuilt.eval()(images), predicted)
        # a student checkpoint (model + proj) made whole with its teacher's file, as tools/eval.py --path_t does
        path_t = tmp_path / f'{model_t}_vanilla' / f'{model_t}_best.pth'
        path_t.parent.mkdir()
        torch.save({'model': teacher.state_dict()}, path_t)
        copy = model_dict['resnet8'](num_classes=NUM_CLASSES)
        copy.load_state_dict(student.state_dict())
        whole = simkd_from_checkpoint(copy, method.checkpoint_extras()['proj'], 'resnet8_last.pth', str(path_t),
                                      None, 'digits')
        assert whole.pool_to == pool_to
        assert torch.equal(whole.eval()(images), predicted)
    # validation scores the deployed path
    loader = [Batch(images, torch.argmax(predicted, 1))]
    top1, _, _, _ = objective.validate(loader, torch.device('cpu'), 'fp32')
    assert top1 == 100.0
    assert 'fc.weight' not in network.state_dict() and not any(k.startswith('student.fc') for k in network.state_dict())


def test_simkd_bad_factor_and_unreachable_classifier_are_one_line_errors():
    for factor in ('3', '0', '128'):
        one_line_error(lambda: real_pair('simkd', 'resnet20', 'resnet8', '-f', factor), match='-f/--factor')
    # MobileNetV2's classifier reads its 1280-channel head, not its last 160-channel map
    one_line_error(lambda: real_pair('simkd', 'MobileNetV2', 'resnet8'), match="teacher's classifier")
    gen = torch.Generator().manual_seed(0)
    one_line_error(lambda: hand_made('simkd', torch.randn(2, 3, 2, 2, generator=gen), torch.randn(2, 4, 2, 2,
                                     generator=gen), nn.Linear(6, 5)), match='reads 6')


# ---------------------------------------------------------------------------------- SRRL

def test_srrl_loss_and_gradient_match_numpy():
    gen = torch.Generator().manual_seed(11)
    feat_s = torch.randn(4, 3, generator=gen, dtype=torch.float64)
    feat_t = torch.randn(4, 5, generator=gen, dtype=torch.float64).relu()
    logits_t = torch.randn(4, 6, generator=gen, dtype=torch.float64)
    classifier = nn.Linear(5, 6).double().requires_grad_(False)
    method = hand_made('srrl', feat_s, feat_t, classifier).double().train()
    assert (method.gamma, method.alpha, method.beta) == (1.0, 1.0, 1.0)
    randomise_bn(method.transfer)
    p = params_of(method.transfer.transfer)
    w, b = classifier.weight.numpy(), classifier.bias.numpy()

    x = feat_s.clone().requires_grad_(True)
    own = torch.randn(4, 6, generator=gen, dtype=torch.float64)
    out_s = NetOutput(own, [x])
    targets = torch.tensor([0, 1, 5, 2])
    logits, terms = train_step(method, out_s, NetOutput(logits_t, [feat_t]), Batch(None, targets))
    expected = np_srrl(feat_s.numpy(), feat_t.numpy(), logits_t.numpy(), p, w, b)
    assert float(terms['srrl'].detach()) == pytest.approx(expected, rel=1e-10)
    assert logits is own  # the student predicts with its own classifier
    assert torch.allclose(terms['ce'], F.cross_entropy(own, targets))
    assert torch.allclose(terms['kd'], kd_loss(own, logits_t, 4.0))
    terms['srrl'].backward()
    np.testing.assert_allclose(x.grad.numpy(), numeric_grad(
        lambda f: np_srrl(f, feat_t.numpy(), logits_t.numpy(), p, w, b), feat_s.numpy()), rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(method.transfer.transfer[0].weight.grad.numpy(), numeric_grad(
        lambda k: np_srrl(feat_s.numpy(), feat_t.numpy(), logits_t.numpy(), dict(p, **{'0.weight': k}), w, b),
        p['0.weight']), rtol=1e-5, atol=1e-9)


def test_srrl_on_a_real_pair_predicts_with_the_students_classifier_and_freezes_the_teachers():
    args, student, teacher, method = real_pair('srrl', 'resnet20', 'resnet8')
    objective = DistillObjective(student, teacher, method).train()
    batch = random_batch(4)
    out = objective.step(batch, epoch=1)
    assert set(out.losses) == {'ce', 'kd', 'srrl'}
    with torch.no_grad():
        assert torch.allclose(out.logits, student(batch.images), atol=1e-5)
    sum(out.losses.values()).backward()
    assert teacher.get_classifier().weight.grad is None
    assert float(method.transfer.transfer[0].weight.grad.abs().sum()) > 0
    objective.eval()
    with torch.no_grad():
        assert torch.equal(objective.predict(batch.images), student(batch.images))
    assert method.deployable(student, teacher) is None and method.checkpoint_extras() == {}
    gen = torch.Generator().manual_seed(0)
    one_line_error(lambda: hand_made('srrl', torch.randn(2, 3, generator=gen), torch.randn(2, 4, generator=gen),
                                     nn.Linear(6, 5)), match='reads 6')


# ---------------------------------------------------------------------------------- SemCKD

def np_semckd_loss(s_value, f_target, weight):
    bsz, n_s, n_t = weight.shape
    total = 0.0
    for n in range(bsz):
        for i in range(n_s):
            for j in range(n_t):
                total += weight[n, i, j] * np.mean((s_value[i][j][n] - f_target[i][j][n]) ** 2)
    return total / (bsz * n_s)


def test_semckd_loss_by_hand():
    from distiller_zoo import SemCKDLoss
    # constant maps c_ij against zero targets, uniform weights 1/2: sum_ij c_ij^2 / 4 = (1 + 4 + 9 + 16) / 4
    shapes = [(4, 2, 3, 3), (4, 5, 1, 1)]
    s_value = [[torch.full(shapes[j], float(2 * i + j + 1)) for j in range(2)] for i in range(2)]
    f_target = [[torch.zeros(shapes[j]) for j in range(2)] for i in range(2)]
    assert float(SemCKDLoss()(s_value, f_target, torch.full((4, 2, 2), 0.5))) == pytest.approx(7.5)

    gen = torch.Generator().manual_seed(2)
    s_value = [[torch.randn(shapes[j], generator=gen, dtype=torch.float64) for j in range(2)] for i in range(2)]
    f_target = [[torch.randn(shapes[j], generator=gen, dtype=torch.float64) for j in range(2)] for i in range(2)]
    weight = torch.softmax(torch.randn(4, 2, 2, generator=gen, dtype=torch.float64), -1).requires_grad_(True)
    loss = SemCKDLoss()(s_value, f_target, weight)
    as_np = [[t.numpy() for t in row] for row in s_value], [[t.numpy() for t in row] for row in f_target]
    assert float(loss.detach()) == pytest.approx(np_semckd_loss(*as_np, weight.detach().numpy()), rel=1e-12)
    loss.backward()  # d loss / d w[n, i, j] = per-sample MSE / (B * n_s)
    per_sample = np.array([[[np.mean((as_np[0][i][j][n] - as_np[1][i][j][n]) ** 2) for j in range(2)]
                            for i in range(2)] for n in range(4)])
    np.testing.assert_allclose(weight.grad.numpy(), per_sample / 8, rtol=1e-12)


def np_embed(sim, p):
    out = relu(sim @ p['linear1.weight'].T + p['linear1.bias']) @ p['linear2.weight'].T + p['linear2.bias']
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def test_selfa_attention_matches_numpy_and_pools_the_taller_map():
    from models.util import SelfA
    gen = torch.Generator().manual_seed(4)
    s_shapes, t_shapes = [(8, 3, 8, 8), (8, 5, 4, 4)], [(8, 2, 4, 4), (8, 6, 2, 2)]
    feat_s = [torch.randn(s, generator=gen, dtype=torch.float64) for s in s_shapes]
    feat_t = [torch.randn(s, generator=gen, dtype=torch.float64) for s in t_shapes]
    attention_module = SelfA(8, [3, 5], [2, 6], 2.0).double()
    proj_value_stu, value_tea, attention = attention_module(feat_s, feat_t)

    assert attention.shape == (8, 2, 2)
    assert torch.allclose(attention.sum(-1), torch.ones(8, 2, dtype=torch.float64), atol=1e-12)
    query = np.stack([np_embed(f.reshape(8, -1).numpy() @ f.reshape(8, -1).numpy().T,
                               params_of(getattr(attention_module, f'query_{i}'))) for i, f in enumerate(feat_s)], 1)
    key = np.stack([np_embed(f.reshape(8, -1).numpy() @ f.reshape(8, -1).numpy().T,
                             params_of(getattr(attention_module, f'key_{j}'))) for j, f in enumerate(feat_t)], 1)
    assert query.shape == (8, 2, 2)  # embeddings 8 // factor 4 wide
    expected = softmax(np.einsum('bid,bjd->bij', query, key) / 2.0)
    np.testing.assert_allclose(attention.detach().numpy(), expected, rtol=1e-10, atol=1e-12)

    for i, fs in enumerate(feat_s):
        for j, ft in enumerate(feat_t):
            size = min(fs.shape[2], ft.shape[2])
            target = np_pool(ft.numpy(), size, size)
            np.testing.assert_allclose(value_tea[i][j].numpy(), target, rtol=1e-12, atol=1e-14)
            assert proj_value_stu[i][j].shape == (8, t_shapes[j][1], size, size)
            regressor = getattr(attention_module, f'regressor{i}{j}').regressor
            assert (regressor[0].in_channels, regressor[-1].out_channels) == (s_shapes[i][1], t_shapes[j][1])


def test_selfa_refuses_a_batch_of_another_size():
    from models.util import SelfA
    attention_module = SelfA(8, [3], [2], 1.0)
    message = one_line_error(lambda: attention_module([torch.randn(6, 3, 4, 4)], [torch.randn(6, 2, 4, 4)]),
                             match='batches of 8')
    assert 'got a batch of 6' in message


def test_semckd_on_a_real_pair_reads_the_stage_maps_and_trains_everything():
    args, student, teacher, method = real_pair('semckd', 'resnet20', 'resnet8', '--batch_size', '8')
    assert (method.gamma, method.alpha, method.beta) == (1.0, 1.0, 100.0)  # digits default (CIFAR: 400)
    assert parse('--distill', 'semckd').beta == 400.0
    attention = method.attention
    assert (attention.feat_dim, attention.s_len, attention.t_len) == (8, 3, 3)  # feats[1:-1]: 3 stages each
    regressor = attention.regressor02.regressor
    assert regressor[0].in_channels == 16 and regressor[-1].out_channels == 64
    objective = DistillObjective(student, teacher, method).train()
    out = objective.step(random_batch(8), epoch=1)
    assert set(out.losses) == {'ce', 'kd', 'semckd'} and torch.isfinite(out.losses['semckd'])
    sum(out.losses.values()).backward()
    for module in (attention.query_0, attention.key_2, attention.regressor21, student):
        assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in module.parameters())
    with pytest.raises(KDZooError, match='batches of 8'):
        objective.step(random_batch(5), epoch=1)
    assert DISTILLERS['semckd'].data_options(args) == {'drop_last': True}
    one_line_error(lambda: real_pair('semckd', 'resnet20', 'resnet8', '-s', '0'), match='-s/--soft')
    one_line_error(lambda: real_pair('semckd', 'resnet20', 'resnet8', '--batch_size', '3'), match='--batch_size')


def test_semckd_attention_is_built_for_each_processs_share_of_the_batch(monkeypatch):
    """--batch_size is the global batch; each of W processes sees batch / W images (the SimKD repo builds
    SelfA for the per-GPU batch size too)."""
    monkeypatch.setattr(distributed, '_CURRENT', distributed.Dist(rank=1, world_size=2))
    args, student, teacher, method = real_pair('semckd', 'resnet20', 'resnet8', '--batch_size', '16')
    assert method.attention.feat_dim == 8
    data = build_data('digits', None, 16, 'cpu', drop_last=True, rank=1, world_size=2)
    data.train.set_epoch(1)
    batch = next(iter(data.train))
    assert batch.images.shape[0] == 8
    method.eval()
    with torch.no_grad():
        out_t = run_network(teacher, batch.images, True, False)
        out_s = run_network(student.eval(), batch.images, True, False)
        assert torch.isfinite(method.method_loss(out_s, out_t, batch, 1))
    one_line_error(lambda: real_pair('semckd', 'resnet20', 'resnet8', '--batch_size', '6'), match='--batch_size')


# ---------------------------------------------------------------------------------- the command line

small_digits = small_digits_fixture(192, 64)  # 192 training and 64 test digits keep the runs fast


@pytest.fixture(scope='module')
def teacher_path(tmp_path_factory, digits_once):
    """The session's resnet20 digits teacher, copied: a test here hides the teacher's folder for a moment,
    which must not hide it from other modules and workers."""
    shared = pathlib.Path(shared_digits_teacher(tmp_path_factory, digits_once, 'resnet20', '--epochs', '1',
                                                '--precision', 'fp32'))
    root = tmp_path_factory.mktemp('teacher')
    shutil.copytree(shared.parents[3], root, dirs_exist_ok=True)
    return str(root / shared.relative_to(shared.parents[3]))


def run_student(teacher_path, root, *flags):
    """train_student.main on the digits; returns (state, run folder, the objective as trained)."""
    built = {}
    build_objective = train_student.build_objective

    def remember(*args, **kwargs):
        built['objective'] = build_objective(*args, **kwargs)
        return built['objective']
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train_student, 'build_objective', remember)
        state = train_student.main(['--path_t', teacher_path, '--model_s', 'resnet8', '--dataset', 'digits',
                                    '--deterministic', '--precision', 'fp32', '--save_root', str(root), *flags])
    folder = root / 'students' / 'models'
    return state, folder / os.listdir(folder)[0], built['objective']


@pytest.fixture(scope='module')
def simkd_run(teacher_path, tmp_path_factory):
    return run_student(teacher_path, tmp_path_factory.mktemp('simkd'), '--distill', 'simkd', '--epochs', '2')


def test_simkd_run_writes_a_deployable_network(simkd_run, teacher_path):
    state, folder, objective = simkd_run
    deploy = torch.load(folder / 'resnet8_deploy.pth', weights_only=True)
    last = torch.load(folder / 'resnet8_last.pth', weights_only=True)
    teacher = torch.load(teacher_path, weights_only=True)['model']
    assert deploy['deploy']['kind'] == 'simkd' and deploy['deploy']['model'] == 'resnet8'
    assert deploy['epoch'] == 2 and deploy['accuracy'] == state['history'][-1]['val_top1']
    weights = deploy['model']
    # the teacher's classifier, bit for bit as in its checkpoint: training never touched it
    assert torch.equal(weights['classifier.weight'], teacher['fc.weight'])
    assert torch.equal(weights['classifier.bias'], teacher['fc.bias'])
    for key, value in last['proj'].items():
        assert torch.equal(weights[f'proj.{key}'], value), key
    student_keys = {k for k in last['model'] if not k.startswith('fc.')}
    assert {k[len('student.'):] for k in weights if k.startswith('student.')} == student_keys
    for key in student_keys:
        assert torch.equal(weights[f'student.{key}'], last['model'][key]), key

    network = load_deployed(deploy, 'resnet8_deploy.pth', NUM_CLASSES).eval()
    assert isinstance(network, SimKDNetwork)
    data = build_data('digits', None, 64, 'cpu')
    images = next(iter(data.val)).images
    objective.eval()
    with torch.no_grad():
        deployed, predicted = network(images), objective.predict(images)
        assert torch.allclose(deployed, predicted, rtol=0, atol=1e-6)
        assert not torch.allclose(predicted, objective.model(images), atol=1e-3)


def test_eval_reads_the_deployed_network_without_the_teacher(simkd_run, teacher_path):
    state, folder, _ = simkd_run
    metrics = json.loads((folder / 'metrics.json').read_text())
    assert metrics['last']['top1'] == state['history'][-1]['val_top1']
    teacher_dir = os.path.dirname(teacher_path)
    hidden = teacher_dir + '_hidden'
    os.rename(teacher_dir, hidden)  # no teacher around
    try:
        result = tools.eval.main(['--path', str(folder / 'resnet8_deploy.pth'), '--precision', 'fp32'])
    finally:
        os.rename(hidden, teacher_dir)
    assert result['dataset'] == 'digits'  # read from the file
    assert result['top1'] == pytest.approx(metrics['last']['top1'], abs=1e-9)
    assert result['loss'] == pytest.approx(state['history'][-1]['val_loss'], rel=1e-5)


@pytest.mark.parametrize('name', ['last', 'best'])
def test_eval_reads_the_student_checkpoint_with_its_teacher(simkd_run, teacher_path, name):
    state, folder, _ = simkd_run
    path = str(folder / f'resnet8_{name}.pth')
    record = state['history'][-1] if name == 'last' else state['history'][state['best_epoch'] - 1]
    result = tools.eval.main(['--path', path, '--path_t', teacher_path, '--dataset', 'digits', '--precision', 'fp32'])
    assert result['top1'] == pytest.approx(record['val_top1'], abs=1e-9)
    assert result['loss'] == pytest.approx(record['val_loss'], rel=1e-5)
    one_line_error(lambda: tools.eval.main(['--path', path, '--dataset', 'digits']), match='--path_t')


def test_simkd_bad_factor_from_the_command_line_writes_nothing(teacher_path, tmp_path):
    with pytest.raises(KDZooError, match='-f/--factor'):
        train_student.main(['--path_t', teacher_path, '--distill', 'simkd', '-f', '3', '--dataset', 'digits',
                            '--precision', 'fp32', '--skip-validation', '--save_root', str(tmp_path / 'save')])
    assert not (tmp_path / 'save').exists()


def test_semckd_run_drops_the_last_short_batch(teacher_path, tmp_path):
    sizes = []
    step = DistillObjective.step

    def counting(self, batch, epoch):
        sizes.append(batch.images.shape[0])
        return step(self, batch, epoch)
    with pytest.MonkeyPatch.context() as patch:
        first_digits(patch, 40)  # 40 training images: 3 batches of 12 and 4 left over
        assert len(build_data('digits', None, 12, 'cpu').train) == 4  # without drop_last
        patch.setattr(DistillObjective, 'step', counting)
        state, folder, objective = run_student(teacher_path, tmp_path, '--distill', 'semckd', '--batch_size', '12',
                                               '--epochs', '1', '--skip-validation')
    assert sizes == [12] * 3  # a 4-image batch would have been refused by the attention
    assert objective.method.attention.feat_dim == 12
    assert state['epoch'] == 1 and np.isfinite(state['history'][-1]['train_loss'])


# ---------------------------------------------------------------------------------- the SimKD repo's names

def test_simkd_repo_imports_constructors_and_outputs():
    from distiller_zoo import SemCKDLoss  # noqa: F401
    from models.util import ConvReg, SelfA, SRRL, SimKD
    gen = torch.Generator().manual_seed(9)
    cls_t = nn.Linear(16, 7)

    simkd = SimKD(s_n=8, t_n=16, factor=4)
    assert simkd.transfer[0].weight.shape == (4, 8, 1, 1) and simkd.transfer[6].weight.shape == (16, 4, 1, 1)
    assert set(simkd.state_dict()) == {'transfer.0.weight', 'transfer.3.weight', 'transfer.6.weight',
                                       *(f'transfer.{i}.{k}' for i in (1, 4, 7) for k in
                                         ('weight', 'bias', 'running_mean', 'running_var', 'num_batches_tracked'))}
    trans_feat_s, trans_feat_t, pred_feat_s = simkd(torch.randn(2, 8, 8, 8, generator=gen),
                                                    torch.randn(2, 16, 4, 4, generator=gen), cls_t)
    assert trans_feat_s.shape == trans_feat_t.shape == (2, 16, 4, 4) and pred_feat_s.shape == (2, 7)
    assert SimKD(s_n=8, t_n=16).transfer[0].weight.shape == (8, 8, 1, 1)  # factor 2 by default

    srrl = SRRL(s_n=8, t_n=16)
    trans, pred = srrl(torch.randn(3, 8, generator=gen), cls_t)
    assert trans.shape == (3, 16) and pred.shape == (3, 7)
    assert set(srrl.state_dict()) == {'transfer.0.weight', *(f'transfer.1.{k}' for k in
                                      ('weight', 'bias', 'running_mean', 'running_var', 'num_batches_tracked'))}
    with pytest.raises(TypeError):
        SRRL(8, 16)  # keyword-only, as in the SimKD repo

    selfa = SelfA(8, [4, 6], [5], 1.0)
    assert selfa.query_0.linear2.out_features == 2  # 8 // factor 4
    assert SelfA(8, [4, 6], [5], 0.5, factor=2).key_0.linear2.out_features == 4
    s_value, f_target, weight = selfa([torch.randn(8, 4, 4, 4, generator=gen), torch.randn(8, 6, 2, 2, generator=gen)],
                                      [torch.randn(8, 5, 2, 2, generator=gen)])
    assert weight.shape == (8, 2, 1) and len(s_value) == len(f_target) == 2 and len(s_value[0]) == 1
    assert float(SemCKDLoss()(s_value, f_target, weight).detach()) > 0

    assert ConvReg((2, 8, 8, 8), (2, 16, 4, 4)).conv.stride == (2, 2)

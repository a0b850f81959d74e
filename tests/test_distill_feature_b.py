"""CC, VID, CRD and KDSVD: values and student gradients against independent formulas, module
construction from real teacher/student pairs, exact resume of CRD's memory, and the bad-input errors."""
import argparse
import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import train_student
from distiller_zoo.teacher import probe_networks
from crd.criterion import CRDLoss, ContrastLoss
from crd.memory import SCORE_EVERY_ROW, ContrastMemory
from dataset.batches import Batch, ContrastSpec
from distiller_zoo import CC, CRD, DISTILLERS, VID, Correlation, KDSVD, KDSVDDistiller, NetOutput, VIDLoss
from helper.errors import KDZooError
from models.registry import build_model

EPS_CRD = 1e-7


def rng(seed=0):
    return np.random.default_rng(seed)


def grad_of(fn, x):
    """d fn(x) / dx for a float64 copy of x."""
    x = x.detach().clone().requires_grad_(True)
    fn(x).backward()
    return x.grad


def make_args(distill, model_s='resnet8x4', model_t='resnet32x4', *extra):
    return train_student.parse_args(['--path_t', 'teacher.pth', '--model_t', model_t, '--model_s', model_s,
                                     '--distill', distill, *extra])


def fake_probe(*shapes):
    return NetOutput(torch.zeros(2, 10), [torch.zeros(2, *s) for s in shapes])


# ---- CC ------------------------------------------------------------------------------------------

def correlation_reference(s, t):
    """The surrogate written out sample by sample."""
    total = 0
    for i in range(len(s) - 1):
        total = total + ((s[i] - t[i]).abs() * (s[i + 1] - t[i + 1]).abs()).sum()
    return total / (len(s) - 1)


def test_correlation_value_and_gradient():
    s, t = rng(1).normal(size=(5, 7)), rng(2).normal(size=(5, 7))
    delta = np.abs(s - t)
    expected = sum(delta[i] @ delta[i + 1] for i in range(4)) / 4
    f_s, f_t = torch.tensor(s), torch.tensor(t)
    assert Correlation()(f_s, f_t).item() == pytest.approx(expected, rel=1e-12)
    got = grad_of(lambda x: Correlation()(x, f_t), f_s)
    torch.testing.assert_close(got, grad_of(lambda x: correlation_reference(x, f_t), f_s), rtol=1e-12, atol=1e-12)


def test_cc_embeds_both_sides_and_trains_both_heads():
    args = make_args('correlation', 'resnet8x4', 'resnet32x4', '--feat_dim', '6')
    cc = CC(args, None, None, fake_probe((256,)), fake_probe((64,)), SimpleNamespace(num_train=64)).double()
    heads = cc.embed_s.linear, cc.embed_t.linear
    assert (heads[0].in_features, heads[1].in_features, heads[0].out_features, heads[1].out_features) == (256, 64, 6, 6)
    f_s, f_t = torch.tensor(rng(3).normal(size=(4, 256))), torch.tensor(rng(4).normal(size=(4, 64)))
    ws, bs = cc.embed_s.linear.weight.detach().numpy(), cc.embed_s.linear.bias.detach().numpy()
    wt, bt = cc.embed_t.linear.weight.detach().numpy(), cc.embed_t.linear.bias.detach().numpy()
    delta = np.abs(f_s.numpy() @ ws.T + bs - (f_t.numpy() @ wt.T + bt))
    expected = np.mean([delta[i] @ delta[i + 1] for i in range(3)])
    loss = cc.method_loss(NetOutput(None, [f_s]), NetOutput(None, [f_t]), None, 1)
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    loss.backward()
    assert cc.embed_t.linear.weight.grad.abs().sum() > 0 and cc.embed_s.linear.weight.grad.abs().sum() > 0
    assert cc.trainable_modules() == [cc]


# ---- VID -----------------------------------------------------------------------------------------

def vid_numpy(w1, w2, w3, log_scale, eps, x, y):
    """x (B, Cs, H, W), y (B, Ct, H, W) already at equal size; 1x1 convs as channel contractions."""
    relu = lambda a: np.maximum(a, 0)
    mu = np.einsum('oi,bihw->bohw', w3, relu(np.einsum('oi,bihw->bohw', w2, relu(np.einsum('oi,bihw->bohw', w1, x)))))
    var = np.log1p(np.exp(log_scale)) + eps
    return np.mean(0.5 * ((mu - y) ** 2 / var[None, :, None, None] + np.log(var)[None, :, None, None]))


def pool2(a):
    """2x2 average pooling."""
    b, c, h, w = a.shape
    return a.reshape(b, c, h // 2, 2, w // 2, 2).mean(axis=(3, 5))


def vid_torch_reference(vid, x, y):
    w = [m.weight.detach()[:, :, 0, 0] for m in vid.regressor if isinstance(m, torch.nn.Conv2d)]
    if x.shape[2] > y.shape[2]:
        b, c, h, wd = x.shape
        x = x.reshape(b, c, h // 2, 2, wd // 2, 2).mean(dim=(3, 5))
    h = torch.relu(torch.einsum('oi,bihw->bohw', w[0], x))
    h = torch.relu(torch.einsum('oi,bihw->bohw', w[1], h))
    mu = torch.einsum('oi,bihw->bohw', w[2], h)
    var = torch.log(1 + torch.exp(vid.log_scale.detach())) + vid.eps
    return (0.5 * ((mu - y) ** 2 / var[:, None, None] + torch.log(var)[:, None, None])).mean()


@pytest.mark.parametrize('student_larger', [True, False])
def test_vid_value_and_gradient(student_larger):
    torch.manual_seed(0)
    vid = VIDLoss(3, 4, 2).double()
    with torch.no_grad():
        vid.log_scale.copy_(torch.tensor([0.3, 2.0], dtype=torch.float64))
    x_size, y_size = (4, 2) if student_larger else (2, 4)
    x = torch.tensor(rng(5).normal(size=(2, 3, x_size, x_size)))
    y = torch.tensor(rng(6).normal(size=(2, 2, y_size, y_size)))
    w = [m.weight.detach()[:, :, 0, 0].numpy() for m in vid.regressor if isinstance(m, torch.nn.Conv2d)]
    xs, ys = (pool2(x.numpy()), y.numpy()) if student_larger else (x.numpy(), pool2(y.numpy()))
    expected = vid_numpy(*w, np.array([0.3, 2.0]), 1e-5, xs, ys)
    assert vid(x, y).item() == pytest.approx(expected, rel=1e-12)
    if student_larger:
        reference = grad_of(lambda a: vid_torch_reference(vid, a, y), x)
        torch.testing.assert_close(grad_of(lambda a: vid(a, y), x), reference, rtol=1e-10, atol=1e-12)


def test_vid_initial_variance_and_modules():
    vid = VIDLoss(8, 5, 5, init_pred_var=5.0, eps=1e-5)
    var = torch.nn.functional.softplus(vid.log_scale) + vid.eps
    torch.testing.assert_close(var, torch.full((5,), 5.0), rtol=1e-6, atol=0)
    convs = [m for m in vid.regressor if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.bias) for c in convs] == [(8, 5, None), (5, 5, None), (5, 5, None)]
    args = make_args('vid', 'MobileNetV2', 'vgg13')
    method = VID(args, None, None, fake_probe((16, 16, 16), (12, 16, 16), (2, 8, 8), (9,)),
                 fake_probe((64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4), (512,)), None)
    # RepDistiller zips the lists: the shorter one decides how many layers are paired
    assert [(c.num_input_channels, c.num_target_channels) for c in method.criterion] == [(12, 128), (2, 256)]


# ---- KDSVD ---------------------------------------------------------------------------------------

def kdsvd_reference(g_s, g_t, k=1):
    """Sample by sample, from the definition (LAPACK's SVD is the only shared primitive)."""
    batch = g_s[0].shape[0]
    losses, previous = [], None
    for f_s, f_t in zip(g_s, g_t):
        v_s_all, v_t_all = [], []
        for b in range(batch):
            _, sv_t, vh_t = torch.linalg.svd(f_t[b].reshape(f_t.shape[1], -1).T, full_matrices=False)
            _, _, vh_s = torch.linalg.svd(f_s[b].reshape(f_s.shape[1], -1).T, full_matrices=False)
            scale = sv_t[:k] / sv_t[:k].norm()
            v_t = vh_t[:k].T / vh_t[:k].T.norm(dim=0)
            cand = vh_s[:k + 3].T / vh_s[:k + 3].T.norm(dim=0)
            cos = cand.T @ v_t
            cols = []
            for c in range(k):
                j = int(cos[:, c].abs().argmax())
                cols.append(torch.sign(cos[j, c]) * cand[:, j])
            v_s_all.append(torch.stack(cols, 1) * scale)
            v_t_all.append(v_t * scale)
        if previous is not None:
            total = 0
            for b in range(batch):
                ps, pt = previous[0][b], previous[1][b]
                rbf_s = torch.exp(-(v_s_all[b][:, None, :] - ps[None, :, :]) ** 2 / 8)
                rbf_t = torch.exp(-(v_t_all[b][:, None, :] - pt[None, :, :]) ** 2 / 8)
                total = total + ((rbf_s - rbf_t.detach()) ** 2).sum()
            losses.append(total / batch)
        previous = v_s_all, v_t_all
    return losses


@pytest.mark.parametrize('k', [1, 2])
def test_kdsvd_value_and_gradient(k):
    r = rng(7)
    shapes = [(3, 5, 4, 4), (3, 6, 3, 3), (3, 8, 2, 2)]
    g_t = [torch.tensor(r.normal(size=s)) for s in shapes]
    g_s = [t + torch.tensor(0.5 * r.normal(size=t.shape)) for t in g_t]
    got = KDSVD(k)(g_s, g_t)
    expected = kdsvd_reference(g_s, g_t, k)
    assert len(got) == 2
    for a, b in zip(got, expected):
        assert a.item() == pytest.approx(b.item(), rel=1e-9)
    for layer in range(3):
        code = grad_of(lambda x: sum(KDSVD(k)(g_s[:layer] + [x] + g_s[layer + 1:], g_t)), g_s[layer])
        ref = grad_of(lambda x: sum(kdsvd_reference(g_s[:layer] + [x] + g_s[layer + 1:], g_t, k)), g_s[layer])
        torch.testing.assert_close(code, ref, rtol=1e-7, atol=1e-10)


# ---- CRD -----------------------------------------------------------------------------------------

def nce_numpy(x, n_data):
    m = x.shape[1] - 1
    noise = m / n_data
    return -(np.log(x[:, 0] / (x[:, 0] + noise + EPS_CRD)).sum()
             + np.log(noise / (x[:, 1:] + noise + EPS_CRD)).sum()) / x.shape[0]


def unit_rows(a):
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def test_contrast_loss_value():
    x = rng(8).uniform(1e-4, 2e-3, size=(3, 6, 1))
    assert ContrastLoss(1000)(torch.tensor(x)).item() == pytest.approx(nce_numpy(x[..., 0], 1000), rel=1e-12)


def memory_with(banks, K, T, momentum):
    memory = ContrastMemory(banks[0].shape[1], banks[0].shape[0], K, T, momentum).double()
    memory.memory_v1.copy_(torch.tensor(banks[0]))
    memory.memory_v2.copy_(torch.tensor(banks[1]))
    return memory


def test_contrast_memory_scores_z_and_update():
    r = rng(9)
    n, d, T, m = 10, 4, 0.5, 0.3
    m1, m2 = unit_rows(r.normal(size=(n, d))), unit_rows(r.normal(size=(n, d)))
    memory = memory_with((m1, m2), 3, T, m)
    v1, v2 = unit_rows(r.normal(size=(2, d))), unit_rows(r.normal(size=(2, d)))
    y, idx = np.array([3, 7]), np.array([[3, 1, 5, 9], [7, 0, 2, 2]])
    assert memory.Z.tolist() == [-1, -1]
    out_v1, out_v2 = memory(torch.tensor(v1), torch.tensor(v2), torch.tensor(y), torch.tensor(idx))
    e1 = np.exp(np.einsum('bkd,bd->bk', m2[idx], v1) / T)   # student anchors, teacher bank
    e2 = np.exp(np.einsum('bkd,bd->bk', m1[idx], v2) / T)
    z1, z2 = e1.mean() * n, e2.mean() * n
    np.testing.assert_allclose(out_v1[..., 0].numpy(), e1 / z1, rtol=1e-6)  # Z is kept in float32
    np.testing.assert_allclose(out_v2[..., 0].numpy(), e2 / z2, rtol=1e-6)
    np.testing.assert_allclose(memory.Z.numpy(), [z1, z2], rtol=1e-6)
    new1, new2 = m1.copy(), m2.copy()
    new1[y] = unit_rows(m * m1[y] + (1 - m) * v1)
    new2[y] = unit_rows(m * m2[y] + (1 - m) * v2)
    np.testing.assert_allclose(memory.memory_v1.numpy(), new1, rtol=1e-12)
    np.testing.assert_allclose(memory.memory_v2.numpy(), new2, rtol=1e-12)
    z_before = memory.Z.clone()
    idx = torch.tensor([[0, 3, 3, 4], [1, 7, 8, 9]])
    out_v1, _ = memory(torch.tensor(v2), torch.tensor(v1), torch.tensor([0, 1]), idx)
    assert torch.equal(memory.Z, z_before)  # frozen after the first batch
    assert out_v1[1, 1, 0].item() == pytest.approx(np.exp(new2[7] @ v2[1] / T) / z_before[0].item(), rel=1e-12)


def test_contrast_memory_uniform_fallback():
    r = rng(10)
    n, d, T = 50, 3, 0.2
    m1, m2 = unit_rows(r.normal(size=(n, d))), unit_rows(r.normal(size=(n, d)))
    memory = memory_with((m1, m2), 7, T, 0.5)
    v1, v2 = unit_rows(r.normal(size=(4, d))), unit_rows(r.normal(size=(4, d)))
    y = np.array([0, 11, 22, 33])
    torch.manual_seed(0)
    out_v1, out_v2 = memory(torch.tensor(v1), torch.tensor(v2), torch.tensor(y))
    assert out_v1.shape == out_v2.shape == (4, 8, 1)
    z1 = memory.Z[0].item()
    all_scores = np.exp(v1 @ m2.T / T) / z1   # (4, n): every possible row of the teacher bank
    np.testing.assert_allclose(out_v1[:, 0, 0].numpy(), all_scores[np.arange(4), y], rtol=1e-12)
    for b in range(4):  # each negative is the score against some bank row
        assert np.all(np.min(np.abs(out_v1[b, 1:, 0].numpy()[:, None] - all_scores[b][None]), axis=1) < 1e-12)


def crd_opt(**changes):
    opt = dict(s_dim=6, t_dim=5, feat_dim=4, nce_k=3, nce_t=0.07, nce_m=0.5, n_data=10)
    opt.update(changes)
    return argparse.Namespace(**opt)


def crd_reference(crd, f_s, f_t, idx, contrast_idx, banks):
    """CRD loss from the definition, for banks taken before the call; Z from this (first) batch."""
    n_data, T = banks[0].shape[0], 0.07

    def embed(head, f):
        e = f @ head.linear.weight.detach().T + head.linear.bias.detach()
        return e / e.norm(dim=1, keepdim=True)

    e_s, e_t = embed(crd.embed_s, f_s), embed(crd.embed_t, f_t)
    p_s = torch.exp((banks[1][contrast_idx] * e_s[:, None]).sum(2) / T)  # student anchor, teacher bank
    p_t = torch.exp((banks[0][contrast_idx] * e_t[:, None]).sum(2) / T)
    total = 0
    for p in (p_s, p_t):
        p = p / (p.detach().mean() * n_data)
        noise = (p.shape[1] - 1) / n_data
        total = total - (torch.log(p[:, 0] / (p[:, 0] + noise + EPS_CRD)).sum()
                         + torch.log(noise / (p[:, 1:] + noise + EPS_CRD)).sum()) / p.shape[0]
    return total


def test_crd_loss_value_and_gradient():
    torch.manual_seed(1)
    crd = CRDLoss(crd_opt()).double()
    f_s, f_t = torch.tensor(rng(11).normal(size=(2, 6))), torch.tensor(rng(12).normal(size=(2, 5)))
    idx, contrast_idx = torch.tensor([4, 8]), torch.tensor([[4, 0, 1, 2], [8, 3, 5, 9]])
    banks = (crd.contrast.memory_v1.clone(), crd.contrast.memory_v2.clone())
    state = copy.deepcopy(crd.state_dict())
    expected = crd_reference(crd, f_s, f_t, idx, contrast_idx, banks)
    assert crd(f_s, f_t, idx, contrast_idx).item() == pytest.approx(expected.item(), rel=1e-6)

    def code(x):
        crd.load_state_dict(state)  # every call starts from the same banks and an unset Z
        return crd(x, f_t, idx, contrast_idx)
    torch.testing.assert_close(grad_of(code, f_s),
                               grad_of(lambda x: crd_reference(crd, x, f_t, idx, contrast_idx, banks), f_s),
                               rtol=1e-6, atol=1e-9)


def test_crd_half_bank_scores_in_fp32(capsys):
    torch.manual_seed(2)
    crd = CRDLoss(crd_opt(crd_bank='bf16'))
    memory = crd.contrast
    assert memory.memory_v1.dtype == memory.memory_v2.dtype == torch.bfloat16
    banks = (memory.memory_v1.float(), memory.memory_v2.float())
    r = rng(13)
    v1 = torch.tensor(unit_rows(r.normal(size=(2, 4))), dtype=torch.float32)
    v2 = torch.tensor(unit_rows(r.normal(size=(2, 4))), dtype=torch.float32)
    y, idx = torch.tensor([1, 6]), torch.tensor([[1, 2, 3, 4], [6, 0, 7, 9]])
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out_v1, out_v2 = memory(v1.bfloat16(), v2.bfloat16(), y, idx)
    assert out_v1.dtype == out_v2.dtype == torch.float32
    e1 = torch.exp((banks[1][idx] * v1.bfloat16().float()[:, None]).sum(2) / 0.07)
    torch.testing.assert_close(out_v1[..., 0], e1 / (e1.mean() * 10), rtol=1e-5, atol=0)
    moved = banks[0][y] * 0.5 + 0.5 * v1.bfloat16().float()
    torch.testing.assert_close(memory.memory_v1[y], (moved / moved.norm(dim=1, keepdim=True)).bfloat16())
    assert 'CRD memory banks' not in capsys.readouterr().out  # small banks are not announced


def test_crd_announces_large_banks(capsys):
    ContrastMemory(1024, 12300, 4)  # 2 x 12300 x 1024 x 4 B = 100.8 MB
    assert 'CRD memory banks: 2 x 12300 x 1024 float32 = 0.10 GB' in capsys.readouterr().out


def crd_method(seed, n_data=20):
    torch.manual_seed(seed)
    args = make_args('crd', 'resnet8x4', 'resnet32x4', '--feat_dim', '8', '--nce_k', '5')
    return CRD(args, None, None, fake_probe((6,)), fake_probe((7,)), SimpleNamespace(num_train=n_data))


def crd_batch(seed):
    g = torch.Generator().manual_seed(seed)
    out_s = NetOutput(None, [torch.randn(4, 6, generator=g)])
    out_t = NetOutput(None, [torch.randn(4, 7, generator=g)])
    indices = torch.randperm(20, generator=g)[:4]
    contrast = torch.cat([indices[:, None], torch.randint(20, (4, 5), generator=g)], 1)
    return out_s, out_t, Batch(None, None, indices, contrast)


def test_crd_exact_resume_restores_banks_and_z():
    first, second = crd_batch(1), crd_batch(2)
    run = crd_method(0)
    run.method_loss(*first, 1)
    saved = copy.deepcopy(run.state_dict())
    assert {'criterion.contrast.Z', 'criterion.contrast.memory_v1', 'criterion.contrast.memory_v2'} <= set(saved)
    assert (saved['criterion.contrast.Z'] > 0).all()
    uninterrupted = run.method_loss(*second, 1)

    resumed = crd_method(123)  # other random banks, embeddings, and an unset Z
    assert resumed.criterion.contrast.Z.tolist() == [-1, -1]
    resumed.load_state_dict(saved)
    again = resumed.method_loss(*second, 1)
    assert torch.equal(again, uninterrupted)
    for key, value in run.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key


def test_crd_options_and_weights():
    args = make_args('crd', 'resnet8x4', 'resnet32x4', '--nce_k', '99', '--mode', 'relax')
    assert CRD.data_options(args) == {'train_sample': ContrastSpec(99, 'relax')}
    expected = {'correlation': (1.0, 0.0, 0.02), 'vid': (1.0, 0.0, 1.0), 'crd': (1.0, 0.0, 0.8),
                'kdsvd': (1.0, 0.0, 1.0)}
    for name, weights in expected.items():
        assert DISTILLERS[name].default_weights == weights and DISTILLERS[name].needs_feats
        assert not DISTILLERS[name].preact


# ---- construction from real model pairs ------------------------------------------------------------

PAIRS = [('resnet32x4', 'resnet8x4'), ('wrn_40_2', 'wrn_16_2'), ('vgg13', 'MobileNetV2')]


@pytest.fixture(scope='module', params=PAIRS, ids=lambda p: f'{p[0]}-{p[1]}')
def pair(request):
    torch.manual_seed(0)
    teacher_name, student_name = request.param
    teacher = build_model(teacher_name, 100, 'cifar100', '--model_t').eval().requires_grad_(False)
    student = build_model(student_name, 100, 'cifar100', '--model_s')
    images = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        feats_t, logits_t = teacher(images, is_feat=True)
    return teacher_name, student_name, teacher, student, images, NetOutput(logits_t, feats_t)


@pytest.mark.parametrize('name', ['correlation', 'vid', 'crd', 'kdsvd'])
def test_modules_from_real_pairs(pair, name):
    teacher_name, student_name, teacher, student, images, out_t = pair
    cls = DISTILLERS[name]
    args = make_args(name, student_name, teacher_name, '--nce_k', '16')
    probe_s, probe_t = probe_networks(student, teacher, cls.preact, 32)
    data = SimpleNamespace(num_train=64)
    if name == 'kdsvd' and teacher_name == 'vgg13':
        with pytest.raises(KDZooError, match='equal student and teacher channel counts'):
            cls(args, student, teacher, probe_s, probe_t, data)
        return
    method = cls(args, student, teacher, probe_s, probe_t, data)
    d_s, d_t = probe_s.feats[-1].shape[1], probe_t.feats[-1].shape[1]
    if name == 'correlation':
        assert (method.embed_s.linear.in_features, method.embed_t.linear.in_features) == (d_s, d_t)
        assert method.embed_s.linear.out_features == method.embed_t.linear.out_features == 128
    elif name == 'vid':
        layers = list(zip(probe_s.feats[1:-1], probe_t.feats[1:-1]))
        assert [(c.num_input_channels, c.num_target_channels) for c in method.criterion] == \
               [(s.shape[1], t.shape[1]) for s, t in layers]
    elif name == 'crd':
        assert (method.criterion.embed_s.linear.in_features, method.criterion.embed_t.linear.in_features) == (d_s, d_t)
        assert method.criterion.contrast.memory_v1.shape == method.criterion.contrast.memory_v2.shape == (64, 128)
    student.zero_grad()
    feats_s, logits_s = student(images, is_feat=True)
    batch = Batch(images, torch.zeros(4, dtype=torch.long), torch.arange(4),
                  torch.cat([torch.arange(4)[:, None], torch.randint(64, (4, 16))], 1))
    loss = method.method_loss(NetOutput(logits_s, feats_s), out_t, batch, 1)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    assert method.trainable_modules() == ([] if name == 'kdsvd' else [method])


# ---- bad input ------------------------------------------------------------------------------------

def test_cc_bad_input():
    data = SimpleNamespace(num_train=129)
    with pytest.raises(KDZooError, match='--feat_dim must be at least 1'):
        CC(make_args('correlation', 'resnet8x4', 'resnet32x4', '--feat_dim', '0'), None, None,
           fake_probe((8,)), fake_probe((8,)), data)
    for batch_size in ('64', '1'):  # 129 = 2 x 64 + 1 leaves a last batch of one sample
        with pytest.raises(KDZooError, match='no batch may hold a single one'):
            CC(make_args('correlation', 'resnet8x4', 'resnet32x4', '--batch_size', batch_size), None, None,
               fake_probe((8,)), fake_probe((8,)), data)
    with pytest.raises(KDZooError, match='at least 2'):
        Correlation()(torch.ones(1, 4), torch.ones(1, 4))
    with pytest.raises(KDZooError, match='equal shape'):
        Correlation()(torch.ones(3, 4), torch.ones(3, 5))


def test_vid_bad_input():
    with pytest.raises(KDZooError, match='4-channel teacher maps'):
        VIDLoss(3, 4, 4)(torch.ones(2, 3, 4, 4), torch.ones(2, 5, 4, 4))
    with pytest.raises(KDZooError, match='intermediate feature maps'):
        VID(make_args('vid'), None, None, fake_probe((8,)), fake_probe((3, 4, 4), (8,)), None)


@pytest.mark.parametrize('change, message', [
    (dict(feat_dim=0), '--feat_dim must be at least 1'),
    (dict(nce_t=0.0), '--nce_t must be positive'), (dict(nce_m=1.0), r'--nce_m must lie in \[0, 1\)'),
    (dict(crd_bank='fp8'), "unknown --crd_bank 'fp8'")])
def test_crd_bad_options(change, message):
    with pytest.raises(KDZooError, match=message):
        CRDLoss(crd_opt(**change))


def test_crd_bad_forward_input():
    crd = CRDLoss(crd_opt())
    with pytest.raises(KDZooError, match='one row per anchor'):
        crd(torch.randn(2, 6), torch.randn(2, 5), torch.tensor([0, 1]), torch.tensor([[0, 1, 2, 3]]))
    with pytest.raises(KDZooError, match='data-set index per sample'):
        crd(torch.randn(2, 6), torch.randn(3, 5), torch.tensor([0, 1]))


def test_kdsvd_bad_input():
    with pytest.raises(KDZooError, match='at least one singular vector'):
        KDSVD(0)
    with pytest.raises(KDZooError, match='equal channel counts'):
        KDSVD()([torch.ones(2, 3, 4, 4)] * 2, [torch.ones(2, 5, 4, 4)] * 2)
    with pytest.raises(KDZooError, match='at least 2 intermediate feature maps'):
        KDSVDDistiller(make_args('kdsvd'), None, None, fake_probe((3, 4, 4), (3, 4, 4), (8,)),
                       fake_probe((3, 4, 4), (3, 4, 4), (8,)), None)


@pytest.mark.parametrize('rows', [12, 400])  # scored against every row / gathered row by row (K + 1 = 6)
def test_contrast_memory_scores_both_ways_alike_and_back_propagates_through_pre_update_rows(rows):
    """Small banks are scored with one GEMM against every row, large ones by gathering each anchor's rows
    (crd.memory.SCORE_EVERY_ROW); either way the scores, the update and the gradients are the definition's,
    the gradients taken through the rows as they were before the step's momentum update."""
    assert (rows <= SCORE_EVERY_ROW * 6) == (rows == 12)
    r = rng(14)
    m1, m2 = unit_rows(r.normal(size=(rows, 4))), unit_rows(r.normal(size=(rows, 4)))
    memory = memory_with((m1, m2), 5, 0.5, 0.3)
    v1 = torch.tensor(unit_rows(r.normal(size=(3, 4))), requires_grad=True)
    v2 = torch.tensor(unit_rows(r.normal(size=(3, 4))), requires_grad=True)
    y = torch.tensor([2, 5, 9])
    idx = torch.cat([y[:, None], torch.tensor(r.integers(rows, size=(3, 5)))], 1)
    out_v1, out_v2 = memory(v1, v2, y, idx)
    assert not torch.equal(memory.memory_v1, torch.tensor(m1))  # the banks moved before the backward pass
    (out_v1.log().sum() + 2 * out_v2.log().sum()).backward()
    # d/dv log exp(<v, row>/T) summed over a row's K+1 scores = sum of those rows / T (Z is a constant)
    expected_v1 = m2[idx.numpy()].sum(1) / 0.5
    expected_v2 = 2 * m1[idx.numpy()].sum(1) / 0.5
    np.testing.assert_allclose(v1.grad.numpy(), expected_v1, rtol=1e-12)
    np.testing.assert_allclose(v2.grad.numpy(), expected_v2, rtol=1e-12)
    e1 = np.exp(np.einsum('bkd,bd->bk', m2[idx.numpy()], v1.detach().numpy()) / 0.5)
    np.testing.assert_allclose(out_v1[..., 0].detach().numpy(), e1 / (e1.mean() * rows), rtol=1e-6)

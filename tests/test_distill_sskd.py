"""SSKD: the rotated views against np.rot90, the error-level ranking and every loss term against hand-computed
values and an independent NumPy version of the official student.py / teacher.py computations, the networks
run once on the 4B batch, the two stages (what each trains, the head's lr schedule), the official flag
spellings, and a tiny end-to-end run."""
import math
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import train_student
from distiller_zoo import SSKD, kept_rows, rotated_views, selected_kd, view_similarity
from distiller_zoo.SSKD import split_views
from helper.errors import KDZooError
from engine.objective import DistillObjective, InitStageObjective
from models import model_dict
from dataset.batches import Batch
from distiller_zoo.teacher import probe_networks, run_teacher

from conftest import small_digits_fixture, train_digits_teacher


# ---- the four views ------------------------------------------------------------------------------------

def test_rotated_views_are_np_rot90_of_each_image_in_order():
    images = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    views = rotated_views(images)
    assert views.shape == (8, 3, 4, 4)
    for b in range(2):
        hwc = images[b].permute(1, 2, 0).numpy()
        for k in range(4):
            want = np.rot90(hwc, k).transpose(2, 0, 1)  # the official loader rotates the HWC array
            np.testing.assert_array_equal(views[4 * b + k].numpy(), want)


def test_rotated_views_keep_channels_last_and_refuse_non_square_images():
    images = torch.randn(2, 3, 4, 4).contiguous(memory_format=torch.channels_last)
    views = rotated_views(images)
    assert views.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(views, rotated_views(images.contiguous()))
    with pytest.raises(KDZooError, match='square'):
        rotated_views(torch.randn(1, 3, 4, 6))


# ---- error level ranking and the selected KL ----------------------------------------------------------------

SCORES = torch.tensor([[3., 1., 2.], [1., 3., 2.], [1., 2., 3.], [3., 2., 1.]])
TARGETS = torch.tensor([0, 0, 1, 2])  # ranks of the target: 0 (right), 2, 1, 2


@pytest.mark.parametrize('ratio, want', [(1.0, [1, 1, 1, 1]), (0.0, [1, 0, 0, 0]),
                                         (0.5, [1, 0, 1, 0]),     # floor(1.5) = 1 wrong row: the rank-1 one
                                         (0.75, [1, 1, 1, 0])])   # 2 wrong rows: rank 1, then the earlier rank 2
def test_kept_rows_hand_example(ratio, want):
    assert kept_rows(SCORES, TARGETS, ratio).tolist() == [bool(w) for w in want]


def test_a_tie_with_the_top_score_counts_as_right():
    assert kept_rows(torch.tensor([[2., 2., 0.]]), torch.tensor([1]), 0.0).tolist() == [True]


def kl_rows(s, t, temperature):
    p = np.exp(t / temperature) / np.exp(t / temperature).sum(1, keepdims=True)
    q = np.exp(s / temperature) / np.exp(s / temperature).sum(1, keepdims=True)
    return (p * np.log(p / q)).sum(1)


def test_selected_kd_hand_example():
    # two classes, T = 2: rows (0, 0) vs (2, 0) and (1, 0) vs (0, 1); only the second row kept
    s = torch.tensor([[0., 0.], [1., 0.]])
    t = torch.tensor([[2., 0.], [0., 1.]])
    p = 1 / (1 + math.exp(0.5))  # softmax((0, 1) / 2)[0]
    q = 1 / (1 + math.exp(-0.5))  # softmax((1, 0) / 2)[0]
    want = 4 * (p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q)))
    got = selected_kd(s, t, torch.tensor([False, True]), 2.0)
    assert got.item() == pytest.approx(want, rel=1e-6)
    both = selected_kd(s, t, torch.tensor([True, True]), 2.0)
    assert both.item() == pytest.approx(4 * kl_rows(s.numpy(), t.numpy(), 2.0).mean(), rel=1e-6)
    assert selected_kd(s, t, torch.tensor([False, False]), 2.0).item() == 0.0  # official: NaN


def test_view_similarity_rows_are_rotated_views_columns_images():
    emb = torch.randn(2, 4, 5)
    sim = view_similarity(emb)
    assert sim.shape == (6, 2)
    for row, (b, k) in enumerate([(0, 1), (0, 2), (0, 3), (1, 1), (1, 2), (1, 3)]):
        for col in range(2):
            want = torch.nn.functional.cosine_similarity(emb[b, k], emb[col, 0], dim=0)
            assert sim[row, col].item() == pytest.approx(want.item(), abs=1e-6)


# ---- every term against the official computation ------------------------------------------------------------

def official_terms(logits_s, logits_t, emb_s, emb_t, targets, a):
    """NumPy version of student.py's four losses on 4B-row outputs (rows: image by image, un-rotated first)."""
    n = len(logits_s)
    batch = n // 4
    nor, aug = np.arange(n) % 4 == 0, np.arange(n) % 4 != 0

    def softmax(x, t):
        e = np.exp(x / t - (x / t).max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    def keep(scores, owner, ratio):
        order = np.argsort(-scores, axis=1, kind='stable')
        rank = np.argmax(order == owner[:, None], axis=1)
        wrong = int((rank > 0).sum())
        return np.sort(np.argsort(rank, kind='stable')[:len(rank) - wrong + int(wrong * ratio)])

    def kl(s, t, temperature, rows):
        p, q = softmax(t[rows], temperature), softmax(s[rows], temperature)
        return (p * np.log(p / q)).sum() / len(rows) * temperature ** 2

    logp = np.log(softmax(logits_s[nor], 1.0))
    ce = -logp[np.arange(batch), targets].mean()
    kd = kl(logits_s[nor], logits_t[nor], a.kd_T, np.arange(batch))
    aug_targets = np.repeat(targets, 3)
    tf_rows = keep(softmax(logits_t[aug], a.tf_T), aug_targets, a.ratio_tf)
    tf = kl(logits_s[aug], logits_t[aug], a.tf_T, tf_rows)

    def simi(emb):
        unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
        return unit[aug] @ unit[nor].T
    s_simi, t_simi = simi(emb_s), simi(emb_t)
    ss_rows = keep(t_simi, np.repeat(np.arange(batch), 3), a.ratio_ss)
    ss = kl(s_simi, t_simi, a.ss_T, ss_rows)
    teacher_head = -np.log(softmax(t_simi, 1.0))[np.arange(3 * batch), np.repeat(np.arange(batch), 3)].mean()
    return dict(ce=a.gamma * ce, kd=a.alpha * kd, tf=a.tf_weight * tf, ss=a.beta * ss), teacher_head


def sskd_args(**overrides):
    args = dict(gamma=0.1, alpha=0.9, beta=10.0, kd_T=4.0, tf_weight=2.7, tf_T=4.0, ss_T=0.5, ratio_tf=1.0,
                ratio_ss=0.75, t_lr=0.05, t_milestones=[30, 45], init_epochs=60)
    args.update(overrides)
    return SimpleNamespace(**args)


def make_sskd(args, width_s=6, width_t=5):
    probe_s = SimpleNamespace(feats=[torch.zeros(1, width_s)])
    probe_t = SimpleNamespace(feats=[torch.zeros(1, width_t)])
    return SSKD(args, None, None, probe_s, probe_t, None)


@pytest.mark.parametrize('ratio_tf, ratio_ss', [(1.0, 0.75), (0.5, 0.3), (0.0, 1.0)])
def test_losses_match_the_official_computation(ratio_tf, ratio_ss):
    rng = np.random.default_rng(0)
    batch, classes = 5, 7
    logits_s, logits_t = rng.standard_normal((4 * batch, classes)) * 3, rng.standard_normal((4 * batch, classes)) * 3
    emb_s, emb_t = rng.standard_normal((4 * batch, 6)), rng.standard_normal((4 * batch, 5))
    targets = rng.integers(0, classes, batch)
    args = sskd_args(ratio_tf=ratio_tf, ratio_ss=ratio_ss)
    method = make_sskd(args)

    def as_tensor(x):
        return torch.tensor(x, dtype=torch.float64)
    out_s = split_views(as_tensor(logits_s), as_tensor(emb_s))
    out_t = split_views(as_tensor(logits_t), as_tensor(emb_t))
    got = method.losses(out_s, out_t, SimpleNamespace(targets=torch.tensor(targets)), epoch=1)
    want, head_loss = official_terms(logits_s, logits_t, emb_s, emb_t, targets, args)
    assert set(got) == {'ce', 'kd', 'tf', 'ss'}
    for name in want:
        assert got[name].item() == pytest.approx(want[name], rel=1e-5), name
    assert method.init_loss(None, out_t, None).item() == pytest.approx(head_loss, rel=1e-5)


def test_teacher_head_loss_hand_example():
    # two images; every rotated view's embedding equals its own image's: cosine 1 to it, 0 to the other
    # image (orthogonal): every row has logits (1, 0) for (own, other) and CE -log(e / (e + 1))
    emb = torch.tensor([[1., 0.], [1., 0.], [1., 0.], [1., 0.],
                        [0., 1.], [0., 1.], [0., 1.], [0., 1.]]).unflatten(0, (2, 4))
    out_t = SimpleNamespace(embedding=emb)
    want = -math.log(math.e / (math.e + 1))
    assert make_sskd(sskd_args()).init_loss(None, out_t, None).item() == pytest.approx(want, rel=1e-6)


def test_zero_weights_drop_their_terms():
    method = make_sskd(sskd_args(alpha=0.0, beta=0.0, tf_weight=0.0))
    out = split_views(torch.randn(8, 3), torch.randn(8, 6))
    out_t = split_views(torch.randn(8, 3), torch.randn(8, 5))
    assert set(method.losses(out, out_t, SimpleNamespace(targets=torch.tensor([0, 1])), 1)) == {'ce'}


def test_head_lr_schedule_is_the_official_multistep():
    method = make_sskd(sskd_args())
    lrs = [method.init_lr_at(None, epoch) for epoch in range(1, 61)]
    assert lrs[:30] == [0.05] * 30
    assert lrs[30:45] == pytest.approx([0.005] * 15) and lrs[45:] == pytest.approx([0.0005] * 15)


# ---- the networks on the 4B batch, and the two stages ------------------------------------------------------

def build(name_s='resnet8', name_t='resnet14'):
    torch.manual_seed(0)
    student, teacher = model_dict[name_s](num_classes=10), model_dict[name_t](num_classes=10).eval()
    probe_s, probe_t = probe_networks(student, teacher, SSKD.preact, 32)
    return make_sskd(sskd_args(), probe_s.feats[-1].shape[1], probe_t.feats[-1].shape[1]), student, teacher


def test_each_network_runs_once_on_the_four_views():
    method, student, teacher = build()
    seen = {}
    for name, net in (('student', student), ('teacher', teacher)):
        net.conv1.register_forward_hook(lambda m, i, o, name=name: seen.setdefault(name, []).append(i[0].shape[0]))
    batch = Batch(torch.randn(3, 3, 32, 32), torch.tensor([0, 1, 2]), torch.arange(3))
    out_t = run_teacher(teacher, batch, method.teacher_request())
    logits, losses = method.forward_train(student, batch, out_t, epoch=1)
    assert seen == {'student': [12], 'teacher': [12]}  # one forward of 4B each: BatchNorm sees every view
    assert logits.shape == (3, 10) and out_t.logits.shape == (12, 10)
    views_t = method.teacher_views(out_t, train_head=False)
    assert views_t.rotated_logits.shape == (9, 10) and views_t.embedding.shape == (3, 4, 64)
    assert not views_t.embedding.requires_grad  # the teacher's head is frozen in the main stage
    with torch.no_grad():
        torch.testing.assert_close(views_t.logits, teacher(batch.images))  # row 0 of each image is un-rotated
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in method.s_head.parameters())
    assert all(p.grad is None for p in method.t_head.parameters())
    seen.clear()
    logits, loss = method.forward_init(student, batch, run_teacher(teacher, batch, method.init_teacher_request()))
    assert seen == {'teacher': [12]} and logits.shape == (3, 10)  # the head stage runs no student
    loss.backward()
    assert all(p.grad is not None for p in method.t_head.parameters())
    assert all(p.grad is None for p in teacher.parameters())


def test_stages_train_the_right_modules_and_modes():
    method, student, teacher = build()
    main, init = DistillObjective(student, teacher, method), InitStageObjective(student, teacher, method)
    init.train()
    assert [m for m in init.trainable_modules()] == [method.t_head]
    assert method.t_head.training and not student.training and not teacher.training
    main.train()
    ids = {id(p) for m in main.trainable_modules() for p in m.parameters()}
    assert ids == {id(p) for p in [*student.parameters(), *method.s_head.parameters()]}
    assert student.training and not method.t_head.training and not teacher.training


def test_bad_values_are_refused():
    for flags, match in ((dict(ratio_ss=1.5), '--ratio_ss'), (dict(tf_T=0.0), '--tf_T'),
                         (dict(t_milestones=[45, 30]), '--t_milestones'), (dict(tf_weight=-1.0), '--tf_weight')):
        with pytest.raises(KDZooError, match=match):
            SSKD.settings(sskd_args(**flags))


def test_official_flag_spellings():
    argv = SSKD.rewrite_argv(['--ce-weight', '1', '--kd-weight=0.5', '--ss-weight', '3', '--t-epoch', '2',
                              '--tf-T', '3', '--kd-T', '2', '--s-arch', 'resnet8'])
    assert argv == ['-r', '1', '-a=0.5', '-b', '3', '--init_epochs', '2', '--tf-T', '3', '--kd_T', '2',
                    '--model_s', 'resnet8']


# ---- end to end on a slice of the digits -------------------------------------------------------------------

small_digits = small_digits_fixture(96, 32)


def test_end_to_end_two_stages(tmp_path):
    path_t = train_digits_teacher(tmp_path, 'resnet8', '--epochs', '1', '--precision', 'fp32')
    built = {}
    build_objective = train_student.build_objective

    def remember(*args, **kwargs):
        objective = build_objective(*args, **kwargs)
        built['objective'] = objective
        built['state'] = {k: v.clone() for k, v in objective.state_dict().items()}
        return objective
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train_student, 'build_objective', remember)
        state = train_student.main(['--path_t', path_t, '--distill', 'sskd', '--model_s', 'resnet8', '--dataset',
                                    'digits', '--t-epoch', '1', '--epochs', '1', '--batch_size', '32',
                                    '--deterministic', '--precision', 'fp32', '--skip-validation',
                                    '--save_root', str(tmp_path)])
    folder = tmp_path / 'students' / 'models' / 'S:resnet8_T:resnet8_digits_sskd_r:0.1_a:0.9_b:10_init_epochs:1_0'
    init = torch.load(folder / 'resnet8_init.pth', weights_only=True)
    last = torch.load(folder / 'resnet8_last.pth', weights_only=True)
    before = built['state']
    # the init stage moved the teacher's head and nothing of the student
    assert all(not torch.equal(init['kdzoo']['objective'][k], before[k])
               for k in ('method.t_head.0.weight', 'method.t_head.2.weight'))
    assert all(torch.equal(init['model'][k], before['model.' + k]) for k in init['model'])
    # the main stage moved the student and its head, not the teacher's head; the teacher never changed
    assert all(torch.equal(last['kdzoo']['objective'][k], init['kdzoo']['objective'][k])
               for k in ('method.t_head.0.weight', 'method.t_head.2.bias'))
    assert not torch.equal(last['kdzoo']['objective']['method.s_head.0.weight'], before['method.s_head.0.weight'])
    assert not torch.equal(last['model']['fc.weight'], before['model.fc.weight'])
    teacher_now = built['objective'].teacher.state_dict()
    assert all(torch.equal(teacher_now[k], before['teacher.' + k]) for k in teacher_now)
    record = state['history'][-1]
    assert {'train_ce', 'train_kd', 'train_tf', 'train_ss'} <= set(record)
    assert set(last['model']) == set(model_dict['resnet8'](num_classes=10).state_dict())  # the plain student
    assert os.path.isfile(folder / 'resnet8_best.pth')


def test_a_bad_ratio_is_one_line(tmp_path, capsys):
    with pytest.raises(KDZooError, match=r'--ratio_tf is a share of the views and must lie in \[0, 1\], got 2'):
        train_student.parse_args(['--path_t', 'x/resnet8_vanilla/resnet8_best.pth', '--distill', 'sskd',
                                  '--dataset', 'digits', '--ratio-tf', '2'])

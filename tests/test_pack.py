"""Packed distillation (engine/pack.py): each member of a pack ends bit-identical to its single run and
writes the same files; resume, a non-finite member, two processes and bad pack specs."""
import json
import os

import pytest
import torch

import train_student
from conftest import first_digits, run_script, write_fake_cifar100
from dataset import ContrastSpec, build_data
from dataset.batches import Batch
from distiller_zoo import TeacherRequest, run_teacher
from engine.loop import Trainer
from engine.pack import MemberLoader, SharedTeacher
from helper.errors import KDZooError, NonFiniteLossError
from models import model_dict


def random_teacher(root, name, num_classes):
    """An untrained teacher checkpoint in a folder whose name gives its architecture (no training needed:
    equality with the single runs does not depend on what the teacher knows)."""
    folder = root / f'{name}_vanilla'
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    torch.save({'model': model_dict[name](num_classes=num_classes).state_dict()}, folder / f'{name}_best.pth')
    return str(folder / f'{name}_best.pth')


@pytest.fixture(scope='module')
def digits_teacher(tmp_path_factory):
    return random_teacher(tmp_path_factory.mktemp('digits_teacher'), 'resnet20', 10)


@pytest.fixture(scope='module')
def cifar(tmp_path_factory):
    """100 training images in batches of 32: three full batches and one of 4 (SemCKD drops it)."""
    root = tmp_path_factory.mktemp('pack_cifar')
    return write_fake_cifar100(str(root / 'data'), n_train=100, n_test=40), random_teacher(root, 'resnet20', 100)


def runs(save_root):
    folder = os.path.join(save_root, 'students', 'models')
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


def same_value(a, b, where):
    if torch.is_tensor(a):
        assert torch.is_tensor(b) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert set(a) == set(b), where
        for key in a:
            if key not in ('wall_time', 'epoch_time', 'wall_time_s', 'save_root'):
                same_value(a[key], b[key], f'{where}/{key}')
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            same_value(x, y, f'{where}[{i}]')
    elif isinstance(a, float) and a != a:
        assert b != b, where  # NaN (the init stage's validation numbers)
    else:
        assert a == b, where


def assert_same_runs(single_root, pack_root):
    """The same run folders, the same files in each, every checkpoint equal tensor for tensor (weights,
    optimiser, method state, history), metrics.json equal but for wall times, TensorBoard folders."""
    assert runs(single_root) == runs(pack_root) and runs(single_root)
    for run in runs(single_root):
        one = os.path.join(single_root, 'students', 'models', run)
        two = os.path.join(pack_root, 'students', 'models', run)
        assert sorted(os.listdir(one)) == sorted(os.listdir(two)), run
        for name in os.listdir(one):
            if name.endswith('.pth'):
                same_value(torch.load(os.path.join(one, name), weights_only=True),
                           torch.load(os.path.join(two, name), weights_only=True), f'{run}/{name}')
        metrics = [json.load(open(os.path.join(folder, 'metrics.json'))) for folder in (one, two)]
        same_value(*metrics, f'{run}/metrics.json')
        for root in (single_root, pack_root):
            assert os.listdir(os.path.join(root, 'students', 'tensorboard', run)), run


def single_runs(common, members, root):
    for model, method, *flags in members:
        train_student.main([*common, '--model_s', model, '--distill', method, *flags, '--save_root', str(root)])


# ---- same result as the single runs -----------------------------------------------------------------
@pytest.mark.slow
def test_pack_of_kd_crd_dkd_simkd_on_digits_equals_the_four_single_runs(digits_teacher, tmp_path, monkeypatch):
    first_digits(monkeypatch, 192, 64)  # runs compared with each other: the whole digits would cost minutes
    common = ['--path_t', digits_teacher, '--dataset', 'digits', '--epochs', '1', '--deterministic',
              '--nce_k', '64', '--print_freq', '5']
    states = train_student.main([*common, '--model_s', 'resnet8', '--distill', 'kd,crd,dkd,simkd',
                                 '--save_root', str(tmp_path / 'pack')])
    assert sorted(states) == ['resnet8 crd', 'resnet8 dkd', 'resnet8 kd', 'resnet8 simkd']
    single_runs(common, [('resnet8', m) for m in ('kd', 'crd', 'dkd', 'simkd')], tmp_path / 'single')
    assert_same_runs(tmp_path / 'single', tmp_path / 'pack')
    simkd = [r for r in runs(tmp_path / 'pack') if '_simkd_' in r][0]
    assert os.path.isfile(tmp_path / 'pack' / 'students' / 'models' / simkd / 'resnet8_deploy.pth')


@pytest.mark.slow
def test_members_that_read_differently_each_get_their_single_run(cifar, tmp_path):
    """Another student and weights (kd on resnet14), drop_last (SemCKD skips the last short batch), the
    strong view (NTCE-KD), the teacher's pre-ReLU maps (OFD; AB, which also has an init stage), dropout
    drawn from the global random state (KD++'s EmbTrans on wrn_16_2, whose embedding is twice the teacher's),
    over two epochs."""
    data, teacher = cifar
    common = ['--path_t', teacher, '--data_folder', data, '--batch_size', '32', '--epochs', '2', '--deterministic',
              '--precision', 'fp32', '--skip-validation']
    members = [('resnet14', 'kd', '-r', '0.5', '-a', '0.5'), ('resnet8', 'semckd'), ('resnet8', 'ntce'),
               ('resnet8', 'ofd'), ('resnet8', 'abound', '--init_epochs', '1'), ('wrn_16_2', 'kd++')]
    out = train_student.main([*common, '--model_s', 'resnet14,resnet8,resnet8,resnet8,resnet8,wrn_16_2',
                              '--distill', 'kd:r=0.5:a=0.5,semckd,ntce,ofd,abound:init_epochs=1,kd++',
                              '--save_root', str(tmp_path / 'pack')])
    assert len(out) == 6
    single_runs(common, members, tmp_path / 'single')
    assert_same_runs(tmp_path / 'single', tmp_path / 'pack')
    ab = [r for r in runs(tmp_path / 'pack') if '_abound_' in r][0]
    assert os.path.isfile(tmp_path / 'pack' / 'students' / 'models' / ab / 'resnet8_init.pth')


def test_one_method_is_a_single_run_and_a_list_is_a_pack():
    single = train_student.parse_args(['--path_t', 'x/resnet20_vanilla/resnet20_best.pth', '--distill', 'kd'])
    assert not hasattr(single, 'members')
    pack = train_student.parse_args(['--path_t', 'x/resnet20_vanilla/resnet20_best.pth', '--distill',
                                     'kd,simkd:f=4:trial=f4', '-r', '0.2'])
    kd, simkd = pack.members
    assert (kd.distill, kd.gamma, kd.alpha) == ('kd', 0.2, 0.9)  # the shared -r, kd's published alpha
    assert (simkd.distill, simkd.factor, simkd.gamma, simkd.trial) == ('simkd', 4, 0.2, 'f4')
    assert pack.labels == ['resnet8 kd', 'resnet8 simkd:f=4:trial=f4'] and pack.epochs == 240


# ---- what the members share -------------------------------------------------------------------------
FAMILIES = ['resnet8', 'ResNet50', 'wrn_16_1', 'vgg8', 'MobileNetV2', 'ShuffleV1', 'ShuffleV2_0_5', 'hcgnet_A1',
            'resnet110_bottleneck']


@pytest.mark.parametrize('name', FAMILIES)
def test_a_teacher_gives_the_same_logits_with_and_without_features(name):
    """What lets one teacher pass with features serve members that read logits only."""
    torch.manual_seed(0)
    net = model_dict[name](num_classes=10).eval()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        plain = net(images)
        assert torch.equal(plain, net(images, is_feat=True)[1])
        assert torch.equal(plain, net(images, is_feat=True, preact=True)[1])


def test_shared_teacher_gives_each_request_what_run_teacher_gives_it():
    torch.manual_seed(0)
    teacher = model_dict['resnet8'](num_classes=10).eval()
    batch = Batch(torch.randn(4, 3, 32, 32), torch.arange(4), torch.arange(4), images_strong=torch.randn(4, 3, 32, 32))
    requests = [TeacherRequest(), TeacherRequest(True), TeacherRequest(True, True),
                TeacherRequest(False, False, ('strong',))]
    shared = SharedTeacher(teacher)
    shared.compute(batch, requests)
    assert shared.passes == 3  # with features, pre-ReLU, the strong view
    for request in requests:
        mine, alone = shared.outputs(batch, request), run_teacher(teacher, batch, request)
        assert torch.equal(mine.logits, alone.logits)
        assert (mine.feats is None) == (alone.feats is None)
        for a, b in zip(mine.feats or [], alone.feats or []):
            assert torch.equal(a, b)
        assert set(mine.views) == set(alone.views)
        for view in mine.views:
            assert torch.equal(mine.views[view].logits, alone.views[view].logits)
    logits_only = SharedTeacher(teacher)
    logits_only.compute(batch, [TeacherRequest()])
    assert logits_only.passes == 1 and logits_only.outputs(batch, TeacherRequest()).feats is None


def test_shared_teacher_honours_requests_that_name_their_input_or_need_nothing():
    """Requests may carry ``view`` (the main pass on another view of the batch) and ``needed`` (no teacher
    at all): one pass per input read, nothing for a member that does not need the teacher."""
    from types import SimpleNamespace
    from models.features import run_network
    torch.manual_seed(0)
    teacher = model_dict['resnet8'](num_classes=10).eval()
    batch = Batch(torch.randn(4, 3, 32, 32), torch.arange(4), torch.arange(4), images_strong=torch.randn(4, 3, 32, 32))
    on_strong = SimpleNamespace(feats=True, preact=False, pooled_map=False, views=(), view='strong', needed=True)
    skip = SimpleNamespace(feats=True, preact=False, pooled_map=False, views=(), view=None, needed=False)
    shared = SharedTeacher(teacher)
    shared.compute(batch, [TeacherRequest(), on_strong, skip])
    assert shared.passes == 2
    assert shared.outputs(batch, skip) is None
    mine = shared.outputs(batch, on_strong)
    with torch.no_grad():
        alone = run_network(teacher, batch.images_strong, True, False)
    assert torch.equal(mine.logits, alone.logits) and all(torch.equal(a, b) for a, b in zip(mine.feats, alone.feats))
    nobody = SharedTeacher(teacher)
    nobody.compute(batch, [skip])
    assert nobody.passes == 0


def test_member_loader_shows_a_member_only_what_it_asked_for():
    data = build_data('digits', '', 64, 'cpu', seed=3, train_sample=ContrastSpec(16),
                      strong_view=True)
    view = MemberLoader(data.train, 1437 // 64, contrast=False, strong=False)
    data.train.set_epoch(1)
    batches = list(view)
    assert len(batches) == len(view) == 22 and len(data.train) == 23
    assert all(b.contrast_idx is None and b.images_strong is None for b in batches)
    plain = build_data('digits', '', 64, 'cpu', seed=3, drop_last=True)
    plain.train.set_epoch(1)
    for mine, alone in zip(batches, plain.train):  # the images a drop_last run without CRD rows sees
        assert torch.equal(mine.images, alone.images) and torch.equal(mine.indices, alone.indices)


# ---- robust ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_resume_auto_resumes_every_member_from_where_it_stopped(cifar, tmp_path, monkeypatch):
    """Interrupted after kd's epoch-1 save (crd has nothing: it starts afresh), then after kd's epoch-2
    save (kd is done and skipped, crd resumes from epoch 1): the same weights as the uninterrupted pack. A
    member whose checkpoint does not fit it stops the resume before anything is written."""
    data, teacher = cifar
    argv = ['--path_t', teacher, '--data_folder', data, '--batch_size', '32', '--epochs', '2', '--deterministic',
            '--precision', 'fp32', '--skip-validation', '--nce_k', '16', '--model_s', 'resnet8', '--distill', 'kd,crd']
    train_student.main([*argv, '--save_root', str(tmp_path / 'whole')])
    original = Trainer.save

    def crash_after_kd(at_epoch):
        def save(self, epoch, top1, is_best):
            original(self, epoch, top1, is_best)
            if epoch == at_epoch and self.args.distill == 'kd':
                raise KeyboardInterrupt
        return save
    parted = ['--save_root', str(tmp_path / 'parted')]
    monkeypatch.setattr(Trainer, 'save', crash_after_kd(1))
    with pytest.raises(KeyboardInterrupt):
        train_student.main([*argv, *parted])
    assert len(runs(tmp_path / 'parted')) == 2
    monkeypatch.setattr(Trainer, 'save', crash_after_kd(2))
    with pytest.raises(KeyboardInterrupt):
        train_student.main([*argv, *parted, '--resume', 'auto'])
    monkeypatch.setattr(Trainer, 'save', original)
    with pytest.raises(KDZooError, match='already holds a run'):  # no silent restart over the runs
        train_student.main([*argv, *parted])
    states = train_student.main([*argv, *parted, '--resume', 'auto'])
    # kd had trained both epochs but was stopped before its closing writes: the resume only finishes it
    assert list(states) == ['resnet8 kd', 'resnet8 crd']
    kd_metrics = [run for run in runs(tmp_path / 'parted') if '_kd_' in run]
    assert json.load(open(tmp_path / 'parted' / 'students' / 'models' / kd_metrics[0] / 'metrics.json'))['status'] \
        == 'finished'
    for run in runs(tmp_path / 'whole'):
        last = [torch.load(root / 'students' / 'models' / run / 'resnet8_last.pth', weights_only=True)
                for root in (tmp_path / 'whole', tmp_path / 'parted')]
        same_value(last[0]['model'], last[1]['model'], run)
        same_value(last[0]['kdzoo']['objective'], last[1]['kdzoo']['objective'], run)  # CRD's memory banks
    with pytest.raises(KDZooError, match='every member of the pack already finished'):
        train_student.main([*argv, *parted, '--resume', 'auto'])

    # A member whose checkpoint is another method's (kd's replaced by crd's) is refused as a single run's
    # --resume is: one line naming the member, before any file is written.
    whole = {run.split('_')[3]: tmp_path / 'whole' / 'students' / 'models' / run / 'resnet8_last.pth'
             for run in runs(tmp_path / 'whole')}
    whole['kd'].write_bytes(whole['crd'].read_bytes())
    before = folder_listing(tmp_path / 'whole')
    with pytest.raises(KDZooError) as err:
        train_student.main([*argv, '--epochs', '3', '--save_root', str(tmp_path / 'whole'), '--resume', 'auto'])
    message = str(err.value)
    assert message.startswith("pack member 'resnet8 kd': --resume checkpoint '") and '\n' not in message
    assert 'was written by a different method or settings' in message
    assert folder_listing(tmp_path / 'whole') == before


def folder_listing(root):
    """{path: modification time} of every file and folder under ``root``."""
    return {os.path.join(top, name): os.stat(os.path.join(top, name)).st_mtime_ns
            for top, folders, files in os.walk(root) for name in folders + files}


@pytest.mark.slow
def test_a_member_with_a_non_finite_loss_stops_and_the_others_go_on(cifar, tmp_path):
    """kd:r=1e39 overflows at its first step; kd trains its two epochs, and a member of one epoch leaves
    the pack after it."""
    data, teacher = cifar
    argv = ['--path_t', teacher, '--data_folder', data, '--batch_size', '32', '--epochs', '2', '--deterministic',
            '--precision', 'fp32', '--skip-validation', '--model_s', 'resnet8', '--distill',
            'kd:r=1e39,kd,kd:epochs=1:trial=short', '--save_root', str(tmp_path)]
    with pytest.raises(NonFiniteLossError, match=r"1 of 3 pack members stopped .*resnet8 kd:r=1e39: the loss"):
        train_student.main(argv)
    status = {}
    for run in runs(tmp_path):
        metrics = json.load(open(tmp_path / 'students' / 'models' / run / 'metrics.json'))
        status[run.split('_r:')[1]] = (metrics['status'], metrics['epochs_done'])
    assert status['1e+39_a:0.9_b:0_0'][0].startswith('stopped: non-finite loss at epoch 1 step 1')
    assert status['0.1_a:0.9_b:0_0'] == ('finished', 2)
    assert status['0.1_a:0.9_b:0_short'] == ('finished', 1)


@pytest.mark.slow
def test_multi_process_pack_follows_the_one_process_pack(tmp_path):
    """Two gloo processes (spawned, --sync-bn) train the pack as one process does, to the end-to-end tolerance
    of tests/test_distributed.py: CRD's single run itself parts between one and two processes where a
    pre-activation within rounding of zero lands on the other side of its ReLU (4e-5 on one CPU, 8e-4 on
    another), so the weights are compared to WEIGHTS_ATOL (a wrong step parts by 2e-2); the loss stays tight."""
    from test_distributed import TINY, WEIGHTS_ATOL, assert_close_tree, last_checkpoint, run, two_processes
    data = write_fake_cifar100(str(tmp_path / 'data'), n_train=128, n_test=48)
    teacher = random_teacher(tmp_path, 'resnet8', 100)
    argv = ['--path_t', teacher, '--model_s', 'resnet8', '--distill', 'kd,crd', *TINY, '--data_folder', data,
            '--epochs', '1', '--nce_k', '32', '--skip-validation']
    run('train_student.py', *argv, '--save_root', tmp_path / 'one', cwd=tmp_path)
    ddp = run('train_student.py', *argv, '--save_root', tmp_path / 'two', '--sync-bn', *two_processes(), cwd=tmp_path)
    assert ddp.stdout.count('[resnet8 crd] epoch 1/1') == 1  # rank 1 prints nothing
    for run_name in runs(tmp_path / 'one'):
        one, two = (last_checkpoint(tmp_path / root / 'students' / 'models' / run_name) for root in ('one', 'two'))
        for key, value in one['model'].items():
            torch.testing.assert_close(value, two['model'][key], rtol=1e-3, atol=WEIGHTS_ATOL)
        assert_close_tree(one['kdzoo']['objective'], two['kdzoo']['objective'], 'objective', WEIGHTS_ATOL)
        assert one['kdzoo']['history'][0]['train_loss'] == pytest.approx(two['kdzoo']['history'][0]['train_loss'],
                                                                          rel=1e-4)
    assert runs(tmp_path / 'one') == runs(tmp_path / 'two') and len(runs(tmp_path / 'one')) == 2


# ---- bad pack specs: one line before anything starts --------------------------------------------------
BAD = {
    # the three closest registered names follow; which they are changes as methods are added
    'unknown method': (['--distill', 'kd,kdd'], "pack member 'kdd': unknown --distill 'kdd' (did you mean kd or "),
    'unknown flag': (['--distill', 'kd:zz=1,crd'], "pack member 'kd:zz=1': unknown flag 'zz'"),
    'flag without value': (['--distill', 'kd:r,crd'], "'r' needs a value (r=...)"),
    'switch with a value': (['--distill', 'norm:plain_ft=1,kd'], "'plain_ft' is a switch and takes no value"),
    'lists of other lengths': (['--distill', 'kd,crd,dkd', '--model_s', 'resnet8,resnet14'],
                               '--model_s lists 2 students and --distill 3 methods'),
    # a flag at its default value leaves the folder name as it is (non-default method flags join it)
    'same folder': (['--distill', 'kd,kd:a=0.9'], "pack members 'resnet8 kd' and 'resnet8 kd:a=0.9' would both "
                                                  "write"),
    'two CRD draws': (['--distill', 'crd,crd:b=1:nce_k=64'], 'draw different CRD contrast rows'),
    'shared setting differs': (['--distill', 'kd,crd:batch_size=32'], "differ in --batch_size (64 and 32)"),
    'unknown student': (['--distill', 'kd,crd', '--model_s', 'resnet8,resnet9'],
                        "pack member 'resnet9 crd': unknown model 'resnet9'"),
    'one resume path': (['--distill', 'kd,crd', '--resume', 'x_last.pth'], 'a pack resumes with --resume auto'),
}


@pytest.mark.parametrize('case', sorted(BAD))
def test_bad_pack_spec_is_one_line(case, digits_teacher):
    argv, message = BAD[case]
    with pytest.raises(KDZooError) as err:
        train_student.parse_args(['--path_t', digits_teacher, '--dataset', 'digits', *argv])
    assert message in str(err.value) and '\n' not in str(err.value)


def test_a_member_that_cannot_pair_with_the_teacher_stops_the_pack_before_it_writes(digits_teacher, tmp_path):
    with pytest.raises(KDZooError, match="pack member 'vgg8 fsp': FSP"):
        train_student.main(['--path_t', digits_teacher, '--dataset', 'digits', '--model_s', 'resnet8,vgg8',
                            '--distill', 'kd,fsp', '--save_root', str(tmp_path), '--epochs', '1'])
    assert not os.path.exists(tmp_path / 'students')
    result = run_script('train_student.py', '--path_t', digits_teacher, '--dataset', 'digits', '--distill', 'kd,kdd',
                        '--save_root', tmp_path, cwd=tmp_path)
    assert result.returncode == 2 and 'Traceback' not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: pack member 'kdd'")


@pytest.mark.slow
def test_a_stop_signal_keeps_every_members_last_epoch_and_resume_finishes_them(cifar, tmp_path):
    """SIGTERM to a packed train_student.py process (what SLURM sends): it exits 143 within seconds, every
    member's last complete epoch is kept and recorded as 'interrupted' with a line per member saying where,
    and --resume auto then finishes every member."""
    import signal
    import subprocess
    import sys
    import time
    from conftest import REPO
    data, teacher = cifar
    argv = ['--path_t', teacher, '--data_folder', data, '--batch_size', '32', '--skip-validation', '--nce_k', '16',
            '--model_s', 'resnet8', '--distill', 'kd,crd', '--save_root', str(tmp_path)]
    job = subprocess.Popen([sys.executable, os.path.join(REPO, 'train_student.py'), *argv, '--epochs', '100'],
                           cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env=dict(os.environ, PYTHONUNBUFFERED='1'))
    deadline = time.time() + 180
    try:
        while len(runs(tmp_path)) < 2 or not all(
                os.path.exists(tmp_path / 'students' / 'models' / run / 'metrics.json') for run in runs(tmp_path)):
            assert job.poll() is None and time.time() < deadline, job.communicate()
            time.sleep(0.1)
        job.send_signal(signal.SIGTERM)
        _, stderr = job.communicate(timeout=60)
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode == 128 + signal.SIGTERM and 'Traceback' not in stderr, stderr
    saved = {}
    for run in runs(tmp_path):
        folder = tmp_path / 'students' / 'models' / run
        saved[run] = torch.load(folder / 'resnet8_last.pth', weights_only=True)['epoch']
        metrics = json.load(open(folder / 'metrics.json'))
        assert (metrics['status'], metrics['epochs_done']) == ('interrupted', saved[run]), run
        assert f"epoch {saved[run]} of 100 is saved in '{folder / 'resnet8_last.pth'}'" in stderr, stderr
    assert 'continue with --resume auto' in stderr.strip().splitlines()[-1]
    target = max(saved.values()) + 1
    states = train_student.main([*argv, '--epochs', str(target), '--resume', 'auto'])
    assert sorted(states) == ['resnet8 crd', 'resnet8 kd']
    for run in runs(tmp_path):
        metrics = json.load(open(tmp_path / 'students' / 'models' / run / 'metrics.json'))
        assert (metrics['status'], metrics['epochs_done'], len(metrics['history'])) == ('finished', target, target)


@pytest.mark.slow
def test_a_full_disk_stops_every_member_with_one_line_naming_each(cifar, tmp_path, monkeypatch):
    """kd's epoch-2 checkpoint does not fit: both members record 'stopped: disk full' over their epoch-1
    files, and the one error names each member's kept epoch once, after the disk's own words."""
    from helper.errors import DiskFullError
    data, teacher = cifar
    argv = ['--path_t', teacher, '--data_folder', data, '--batch_size', '32', '--epochs', '3', '--precision', 'fp32',
            '--skip-validation', '--nce_k', '16', '--model_s', 'resnet8', '--distill', 'kd,crd',
            '--save_root', str(tmp_path)]
    original = Trainer.save

    def save(self, epoch, top1, is_best):
        if epoch == 2 and self.args.distill == 'kd':
            raise DiskFullError("no space left on the disk of 'save/'")
        original(self, epoch, top1, is_best)
    monkeypatch.setattr(Trainer, 'save', save)
    with pytest.raises(DiskFullError) as stop:
        train_student.main(argv)
    message = str(stop.value)
    assert message.startswith("no space left on the disk of 'save/'; resnet8 kd: epoch 1 of 3 is saved in '")
    assert message.count("no space left") == 1 and '; resnet8 crd: epoch 1 of 3 is saved in' in message
    assert message.endswith('continue with --resume auto once there is room')
    for run in runs(tmp_path):
        metrics = json.load(open(tmp_path / 'students' / 'models' / run / 'metrics.json'))
        assert (metrics['status'], metrics['epochs_done']) == ('stopped: disk full', 1), run

"""Multi-process training with gloo on the CPU: two processes give what one process gives on the same
global batch, a rank that dies or hangs ends the job, and bad distributed flags are one line each.

Why the equality runs use --sync-bn: a process normalises its BatchNorm layers by the statistics of its
own share of the global batch (half of it here), which are not the global batch's, so without --sync-bn
two processes compute a (slightly) different function than one. With --sync-bn (CrossRankBatchNorm on
the CPU) the moments are summed over the processes, forward and backward, and the job computes what
one process computes on the whole batch. Everything else is exact by construction: each process draws
the whole global batch's shuffle, crops, flips and CRD rows and keeps its slice, gradients are averaged
weighted by the samples, CRD's banks are updated with the gathered global batch, and L-MCL's
contrastive losses and meta step see the gathered global batch. What differs is the order of float
sums, hence the tolerance.

Why the end-to-end runs compare weights, BN statistics and CRD's banks to WEIGHTS_ATOL, not to float32
rounding: another order of float32 sums can put a pre-activation that lies within rounding of zero on the
other side of its ReLU. The gradient then jumps by that one element's share (about 1 % of a conv's weight
gradient, a sum that largely cancels before BatchNorm), and the runs part by about 1e-4 in a few steps:
CRD's one-process run sat 4e-8 from a ReLU's kink at step 3 of 4 on one machine, where one process with
2 threads instead of 1 parts from it exactly as much as two processes do. No implementation can promise
float32 rounding there, so the exactness of the steps is checked in float64 in-process
(test_online_step_is_exact_... and test_crd_steps_are_exact_...), and WEIGHTS_ATOL sits over ten times
below what a wrong step gives (two processes without --sync-bn part by 2e-2). The losses, which a
single element moves by far less, keep their tight tolerance.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import torch

from conftest import REPO, run_script, write_fake_cifar100
from engine import launch
from helper import distributed, sync_bn
from helper.errors import KDZooError

# 128 training images in batches of 32: four steps an epoch; 48 test images.
WEIGHTS_ATOL = 1e-3  # the end-to-end runs' weights, BN statistics and banks (see the module docstring)
TINY = ['--dataset', 'cifar100', '--batch_size', '32', '--precision', 'fp32', '--seed', '7', '--print_freq', '2']


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def two_processes(*extra):
    return ['--multiprocessing-distributed', '--nproc-per-node', '2', '--dist-url',
            f'tcp://127.0.0.1:{free_port()}', *extra]


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return write_fake_cifar100(str(tmp_path_factory.mktemp('cifar')), n_train=128, n_test=48)


# One thread a process: on a machine whose two cores are shared, OpenMP threads that spin waiting for
# each other make a tiny step twenty times slower (the workers of a job take cores / processes anyway).
ENV = dict(os.environ, PYTHONUNBUFFERED='1', OMP_NUM_THREADS='1')


def run(script, *args, cwd, timeout=240):
    result = subprocess.run([sys.executable, os.path.join(REPO, script), *map(str, args)], cwd=cwd, env=ENV,
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def last_checkpoint(save_root):
    paths = [os.path.join(folder, name) for folder, _, names in os.walk(save_root) for name in names
             if name.endswith('_last.pth') and '_peer' not in name]
    assert len(paths) == 1, paths
    return torch.load(paths[0], weights_only=True)


def assert_close_tree(a, b, where='', atol=2e-5):
    """Tensors within float tolerance, everything else equal, recursively."""
    if torch.is_tensor(a):
        assert torch.is_tensor(b) and a.shape == b.shape, where
        if a.is_floating_point():
            torch.testing.assert_close(a, b, rtol=2e-4, atol=atol, msg=lambda m: f'{where}: {m}')
        else:
            assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert set(a) == set(b), where
        for key in a:
            assert_close_tree(a[key], b[key], f'{where}/{key}', atol)
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_close_tree(x, y, f'{where}[{i}]', atol)


def assert_same_training(single_root, ddp_root):
    one, two = last_checkpoint(single_root), last_checkpoint(ddp_root)
    assert_close_tree(one['model'], two['model'], 'model', WEIGHTS_ATOL)
    assert_close_tree(one['kdzoo']['objective'], two['kdzoo']['objective'], 'objective', WEIGHTS_ATOL)
    for x, y in zip(one['kdzoo']['history'], two['kdzoo']['history']):
        assert x['train_loss'] == pytest.approx(y['train_loss'], rel=1e-4)
        assert x['val_loss'] == pytest.approx(y['val_loss'], rel=1e-3)
        assert abs(x['val_top1'] - y['val_top1']) <= 100 / 48 + 1e-6  # at most one test image apart
    return one, two


@pytest.fixture(scope='module')
def teacher(data, tmp_path_factory):
    """A 2-epoch resnet8 teacher trained in one process: the reference of the teacher test and the
    teacher of the student tests."""
    root = tmp_path_factory.mktemp('teacher_single')
    run('train_teacher.py', '--model', 'resnet8', *TINY, '--data_folder', data, '--epochs', '2',
        '--save_root', root / 'save', cwd=root)
    folder = root / 'save' / 'teachers' / 'models' / 'resnet8_vanilla'
    return root / 'save', folder / 'resnet8_best.pth'


@pytest.mark.slow
def test_teacher_two_processes_and_a_resume_under_torchrun_equal_one_process(teacher, data, tmp_path):
    """Epoch 1 by --multiprocessing-distributed, epoch 2 by a --resume under torchrun (env://): the
    weights, BN statistics and the training/validation numbers match the one-process run."""
    save = tmp_path / 'save'
    common = ['--model', 'resnet8', *TINY, '--data_folder', data, '--save_root', save, '--sync-bn']
    run('train_teacher.py', *common, '--epochs', '1', *two_processes(), cwd=tmp_path)
    torchrun = subprocess.run(
        [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_addr', '127.0.0.1',
         '--master_port', str(free_port()), os.path.join(REPO, 'train_teacher.py'), *map(str, common),
         '--epochs', '2', '--resume', 'auto'], cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=240)
    assert torchrun.returncode == 0, torchrun.stdout[-3000:] + torchrun.stderr[-3000:]
    assert 'resumed main stage' in torchrun.stdout
    one, two = assert_same_training(teacher[0], save)
    assert [r['epoch'] for r in two['kdzoo']['history']] == [1, 2]
    metrics = json.load(open(save / 'teachers' / 'models' / 'resnet8_vanilla' / 'metrics.json'))
    assert metrics['status'] == 'finished' and metrics['epochs_done'] == 2


@pytest.mark.slow
@pytest.mark.parametrize('method', ['kd', 'crd'])
def test_student_two_processes_equal_one_process(method, teacher, data, tmp_path):
    """KD, and CRD, whose memory banks and normalisation constants must also agree (gathered updates)."""
    argv = ['--path_t', teacher[1], '--model_s', 'resnet8', '--distill', method, *TINY, '--data_folder', data,
            '--epochs', '1', '--nce_k', '32', '--skip-validation']
    run('train_student.py', *argv, '--save_root', tmp_path / 'one', cwd=tmp_path)
    ddp = run('train_student.py', *argv, '--save_root', tmp_path / 'two', '--sync-bn', *two_processes(), cwd=tmp_path)
    one, two = assert_same_training(tmp_path / 'one', tmp_path / 'two')
    if method == 'crd':
        banks = one['kdzoo']['objective']
        assert any(key.endswith('memory_v1') for key in banks) and any(key.endswith('.Z') for key in banks)
    # One console: rank 1's lines are not printed.
    assert ddp.stdout.count('epoch 1/1') == 1


@pytest.mark.slow
def test_online_mcl_two_processes_follow_one_process(tmp_path):
    """L-MCL with its meta step, end to end: the same losses, and weights within float32's reach. The
    gradients of this deep two-peer network are ill-conditioned in float32 on random images: the same
    step on the same images with torch's BatchNorm and with CrossRankBatchNorm (more precise) differs by
    up to about 1 %, so the exactness of the method is checked in float64 by the next test. Two steps of 16
    images (the meta step, second-order through both peers, runs at the first): the cost is the meta step's."""
    data = write_fake_cifar100(str(tmp_path / 'data'), n_train=32, n_test=16)
    argv = ['--arch', 'lmcl_resnet32_cifar', *TINY, '--batch_size', '16', '--init-lr', '0.01', '--data_folder', data,
            '--epochs', '1', '--meta-freq', '50', '--times', '1']
    run('train_online_mcl.py', *argv, '--save_root', tmp_path / 'one', cwd=tmp_path)
    run('train_online_mcl.py', *argv, '--save_root', tmp_path / 'two', '--sync-bn', *two_processes(), cwd=tmp_path)
    one, two = last_checkpoint(tmp_path / 'one'), last_checkpoint(tmp_path / 'two')
    for key, value in one['model'].items():
        if value.is_floating_point():  # two steps of lr 0.01 move a weight by up to about 0.02
            assert (value - two['model'][key]).abs().max() <= 5e-3, key
    x, y = one['kdzoo']['history'][0], two['kdzoo']['history'][0]
    for key in ('train_loss', 'train_ce', 'train_vcl', 'train_icl'):
        assert x[key] == pytest.approx(y[key], rel=1e-4), key
    for key in ('train_soft_vcl', 'train_soft_icl'):  # small KL terms: second-step weights differ in float32
        assert x[key] == pytest.approx(y[key], rel=2e-3), key
    for root in ('one', 'two'):  # rank 0 exported every peer
        assert len([n for _, _, names in os.walk(tmp_path / root) for n in names if n.endswith('_peer1_last.pth')]) == 1


@pytest.mark.slow
def test_recorded_validation_is_that_of_the_saved_file_and_a_resume_repeats_it(data, tmp_path):
    """Without --sync-bn each process's BatchNorm statistics follow its own half of every batch; rank 0's are
    the run's (saved), and every process validates with them. So metrics.json's last epoch is what
    tools/eval.py measures on <name>_last.pth, and a run resumed after epoch 1 records what the
    uninterrupted run records."""
    import tools.eval
    common = ['--model', 'resnet8', *TINY, '--data_folder', data, *two_processes()]
    run('train_teacher.py', *common, '--epochs', '2', '--save_root', tmp_path / 'whole', cwd=tmp_path)
    folder = tmp_path / 'whole' / 'teachers' / 'models' / 'resnet8_vanilla'
    recorded = json.load(open(folder / 'metrics.json'))['history'][-1]
    evaluated = tools.eval.main(['--path', str(folder / 'resnet8_last.pth'), '--data_folder', str(data),
                                 '--precision', 'fp32', '--num_workers', '0'])
    assert (evaluated['top1'], evaluated['top5']) == (recorded['val_top1'], recorded['val_top5'])
    assert evaluated['loss'] == pytest.approx(recorded['val_loss'], rel=1e-6)  # only the order of the sum differs

    run('train_teacher.py', *common, '--epochs', '1', '--save_root', tmp_path / 'parted', cwd=tmp_path)
    run('train_teacher.py', *common, '--epochs', '2', '--save_root', tmp_path / 'parted', '--resume', 'auto',
        cwd=tmp_path)
    whole, parted = last_checkpoint(tmp_path / 'whole'), last_checkpoint(tmp_path / 'parted')
    for key, value in whole['model'].items():
        assert torch.equal(value, parted['model'][key]), key
    for a, b in zip(whole['kdzoo']['history'], parted['kdzoo']['history'], strict=True):
        assert {k: v for k, v in a.items() if k != 'epoch_time'} == {k: v for k, v in b.items() if k != 'epoch_time'}


def _online_step_gradients(rank, port, queue):
    """One L-MCL step in float64, on 16 images in one process and on 8 + 8 in two: gradients of every
    trained parameter (peers, projection heads, aggregator) after the gradient average."""
    import torch.distributed as dist
    import train_online_mcl
    from dataset.batches import Batch
    from online.lmcl import LMCL as OnlineObjective, PeerSet
    torch.set_num_threads(1)
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}', rank=rank, world_size=2)
    group = dist.new_group(backend='gloo')
    torch.manual_seed(0)
    args = train_online_mcl.parse_args(['--arch', 'lmcl_resnet32_cifar', '--no-meta'])
    objective = OnlineObjective(PeerSet(['resnet8', 'resnet8'], 10, 'cifar100'), args, meta=False).double()
    images, targets = torch.randn(16, 3, 32, 32, dtype=torch.float64), torch.arange(16) // 2
    params = [p for m in objective.trainable_modules() for p in m.parameters()]

    def gradients(batch):
        objective.zero_grad()
        sum(objective.step(batch, 1).losses.values()).backward()
        return [p.grad.clone() for p in params]
    reference = gradients(Batch(images, targets, torch.arange(16)))
    distributed._CURRENT = distributed.Dist(rank, 2, rank, 2, 'gloo', 'cpu', group)
    for module in objective.trainable_modules():
        sync_bn.convert_sync_batchnorm(module, torch.device('cpu'))
    mine = slice(8 * rank, 8 * rank + 8)
    gradients(Batch(images[mine], targets[mine], torch.arange(16)[mine]))
    distributed.all_reduce_gradients(params, 8)
    queue.put(max(float((a - p.grad).abs().max() / a.abs().max().clamp(min=1e-30)) for a, p in zip(reference, params)))
    dist.destroy_process_group()


def _broadcast_batchnorm(rank, port, queue):
    """Each rank gives every BatchNorm layer rank-specific statistics, then takes rank 0's."""
    import torch.distributed as dist
    from torch import nn
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}', rank=rank, world_size=2)
    objective = nn.Module()
    objective.model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    objective.method = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))  # a method's own module (SimKD, ND)
    objective.teacher = nn.Sequential(nn.BatchNorm2d(4))                  # frozen, rebuilt by the script
    for layer in objective.modules():
        if isinstance(layer, nn.modules.batchnorm._BatchNorm):
            layer.running_mean.fill_(rank + 1)
            layer.running_var.fill_(10 * (rank + 1))
            layer.num_batches_tracked.fill_(100 * (rank + 1))
    distributed.broadcast_batchnorm_buffers(objective, ('teacher.',))
    queue.put((rank, {k: float(v.float().mean()) for k, v in objective.state_dict().items() if 'running' in k
                      or 'num_batches' in k}))
    dist.destroy_process_group()


@pytest.mark.slow
def test_batchnorm_statistics_of_every_trained_module_are_rank_0s():
    ctx = torch.multiprocessing.get_context('spawn')
    queue = ctx.SimpleQueue()
    torch.multiprocessing.start_processes(_broadcast_batchnorm, args=(free_port(), queue), nprocs=2,
                                          start_method='spawn')
    results = dict([queue.get(), queue.get()])
    assert results[0] == results[1] | {k: v for k, v in results[0].items() if k.startswith('teacher.')}
    assert results[1]['model.1.running_mean'] == 1 and results[1]['method.1.num_batches_tracked'] == 100
    assert results[1]['teacher.0.running_mean'] == 2  # the teacher is left alone


@pytest.mark.slow
def test_online_step_is_exact_across_two_processes_in_float64():
    """CrossRankBatchNorm, the gathered contrastive losses (with their gradients) and the weighted gradient
    average give one process's gradients to float64 rounding."""
    ctx = torch.multiprocessing.get_context('spawn')
    queue = ctx.SimpleQueue()
    torch.multiprocessing.start_processes(_online_step_gradients, args=(free_port(), queue), nprocs=2,
                                          start_method='spawn')
    worst = [queue.get(), queue.get()]
    assert max(worst) < 1e-10, worst


def _crd_steps(rank, port, queue):
    """Two CRD steps (momentum SGD) in float64 on a global batch of 16, in one process and as 8 + 8 in two.
    The second step scores against banks the first updated and divides by the first batch's Z. Puts the
    worst relative difference of the gradients (after the average) and of the final parameters, BN
    statistics, banks and Z."""
    import copy

    import torch.distributed as dist
    from dataset.batches import Batch, ContrastSpec
    from dataset.contrast import ContrastSampler
    from distiller_zoo import build_distiller
    from engine.objective import DistillObjective
    from models import model_dict
    torch.set_num_threads(1)
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}', rank=rank, world_size=2)
    group = dist.new_group(backend='gloo')
    torch.manual_seed(0)
    labels = torch.arange(48) % 12  # 48 training images of 12 classes: the banks' rows
    student, teacher = model_dict['resnet8'](num_classes=12), model_dict['resnet8'](num_classes=12)
    method = build_distiller('crd', student, teacher, num_train=48, train_labels=labels, nce_k=16)
    reference = DistillObjective(student, teacher, method).double()
    mine = copy.deepcopy(reference)
    sampler = ContrastSampler(labels, ContrastSpec(16), 'cpu')
    generator = torch.Generator().manual_seed(1)
    batches = []
    for _ in range(2):
        indices = torch.randperm(48, generator=generator)[:16]
        batches.append(Batch(torch.randn(16, 3, 32, 32, dtype=torch.float64, generator=generator), labels[indices],
                             indices, sampler.sample(indices, labels[indices], generator)))

    def train(objective, batches, average):
        params = [p for m in objective.trainable_modules() for p in m.parameters()]
        optimizer = torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=5e-4)
        objective.train()
        seen = {}
        for step, batch in enumerate(batches):
            optimizer.zero_grad()
            sum(objective.step(batch, 1).losses.values()).backward()
            average(params, batch.targets.size(0))
            seen.update({f'step {step} gradient {i}': p.grad.clone() for i, p in enumerate(params)})
            optimizer.step()
        return {**seen, **{k: t for k, t in objective.state_dict().items() if t.is_floating_point()}}
    expected = train(reference, batches, lambda params, n: None)
    distributed._CURRENT = distributed.Dist(rank, 2, rank, 2, 'gloo', 'cpu', group)
    for module in mine.trainable_modules():
        sync_bn.convert_sync_batchnorm(module, torch.device('cpu'))
    share = slice(8 * rank, 8 * rank + 8)
    got = train(mine, [Batch(b.images[share], b.targets[share], b.indices[share], b.contrast_idx[share])
                       for b in batches], distributed.all_reduce_gradients)
    assert set(got) == set(expected)
    assert {'method.criterion.contrast.memory_v1', 'method.criterion.contrast.Z'} <= set(got)
    queue.put(max(float((a - got[k]).abs().max() / a.abs().max().clamp(min=1e-30)) for k, a in expected.items()))
    dist.destroy_process_group()


@pytest.mark.slow
def test_crd_steps_are_exact_across_two_processes_in_float64():
    """CRD's banks updated with the gathered global batch, Z from the global first batch, CrossRankBatchNorm
    and the weighted gradient average give one process's gradients, weights, banks and Z to float64
    rounding over two steps."""
    ctx = torch.multiprocessing.get_context('spawn')
    queue = ctx.SimpleQueue()
    torch.multiprocessing.start_processes(_crd_steps, args=(free_port(), queue), nprocs=2, start_method='spawn')
    worst = [queue.get(), queue.get()]
    assert max(worst) < 1e-10, worst


# ---- failures -----------------------------------------------------------------------------------

def descendants(pid):
    """Every live process below ``pid``."""
    children = {}
    for entry in os.listdir('/proc'):
        if entry.isdigit():
            try:
                with open(f'/proc/{entry}/stat') as f:
                    parent = int(f.read().rsplit(')', 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def alive(pid):
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except OSError:
        return False


def workers_of(pid):
    """The spawned training processes (not multiprocessing's resource tracker), in start order."""
    found = []
    for child in descendants(pid):
        try:
            cmdline = open(f'/proc/{child}/cmdline', 'rb').read()
        except OSError:
            continue
        if b'spawn_main' in cmdline:
            found.append(child)
    return sorted(found)


def wait_then_reap(job, everything, timeout=60):
    """The job's stderr once it ends (within ``timeout``); any of ``everything`` still alive then is killed."""
    try:
        return job.communicate(timeout=timeout)[1]
    finally:
        if job.poll() is None:
            for pid in everything:
                if alive(pid):
                    os.kill(pid, signal.SIGKILL)


def start_long_job(data, tmp_path):
    """A two-process teacher run long enough to be interrupted; returns it once both ranks train."""
    argv = [sys.executable, os.path.join(REPO, 'train_teacher.py'), '--model', 'resnet8', *TINY,
            '--data_folder', str(data), '--epochs', '200', '--save_root', str(tmp_path / 'save'), *two_processes()]
    # A heartbeat 10 s old means hung (40 s by default): a tiny step beats every second, and the hung case
    # ends in seconds instead of sitting out the default.
    job = subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env=dict(ENV, KDZOO_HANG_TIMEOUT='10'))
    deadline = time.time() + 120
    while not (tmp_path / 'save' / 'teachers' / 'models' / 'resnet8_vanilla' / 'metrics.json').exists():
        assert job.poll() is None and time.time() < deadline, job.communicate()
        time.sleep(0.2)
    workers = workers_of(job.pid)
    assert len(workers) == 2, workers
    return job, workers


@pytest.mark.slow
@pytest.mark.parametrize('how', ['killed', 'hung'])
def test_a_rank_that_dies_or_hangs_ends_the_job_within_60_s(how, data, tmp_path):
    """SIGKILL (dies) or SIGSTOP (hangs: alive, no progress) rank 1: the job ends within 60 s with one
    line naming the rank, and no process of it is left."""
    job, workers = start_long_job(data, tmp_path)
    everything = [job.pid] + descendants(job.pid)
    victim = workers[1]
    os.kill(victim, signal.SIGKILL if how == 'killed' else signal.SIGSTOP)
    started = time.time()
    stderr = wait_then_reap(job, everything)
    elapsed = time.time() - started
    assert elapsed < 60
    assert job.returncode == 1
    last = [line for line in stderr.strip().splitlines() if line.startswith('error: ')][-1]
    assert last.startswith(f'error: rank 1 (pid {victim}) ') and 'the job was stopped' in last, stderr
    assert ('SIGKILL' if how == 'killed' else 'hung') in last
    assert 'Traceback' not in stderr and 'leaked' not in stderr
    time.sleep(0.5)
    assert [pid for pid in everything if alive(pid)] == []


@pytest.mark.slow
def test_sigterm_to_the_launcher_stops_the_job_and_records_interrupted(data, tmp_path):
    """SIGTERM to the process that spawned the workers (what Kubernetes or `kill` sends): the workers stop as
    on SIGINT, rank 0 records 'interrupted' over the epochs its last checkpoint holds, one line says where
    that is, exit status 143, and no process is left."""
    job, workers = start_long_job(data, tmp_path)
    everything = [job.pid] + descendants(job.pid)
    os.kill(job.pid, signal.SIGTERM)
    stderr = wait_then_reap(job, everything)
    assert job.returncode == 143, stderr
    folder = tmp_path / 'save' / 'teachers' / 'models' / 'resnet8_vanilla'
    saved = torch.load(folder / 'resnet8_last.pth', weights_only=True)['epoch']
    line, = [line for line in stderr.strip().splitlines() if 'interrupted' in line]
    assert line == (f"interrupted by SIGTERM: epoch {saved} of 200 is saved in '{folder / 'resnet8_last.pth'}'; "
                    f"continue with --resume auto"), stderr
    assert 'Traceback' not in stderr
    metrics = json.load(open(folder / 'metrics.json'))
    assert (metrics['status'], metrics['epochs_done'], len(metrics['history'])) == ('interrupted', saved, saved)
    time.sleep(0.5)
    assert [pid for pid in everything if alive(pid)] == []


@pytest.mark.slow
def test_a_dist_url_that_cannot_be_bound_is_one_line(data, tmp_path):
    with socket.socket() as taken:
        taken.bind(('127.0.0.1', 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_script('train_teacher.py', '--model', 'resnet8', *TINY, '--data_folder', data, '--epochs', '1',
                            '--save_root', tmp_path / 'save', '--multiprocessing-distributed', '--nproc-per-node', '2',
                            '--dist-url', f'tcp://127.0.0.1:{port}', cwd=tmp_path)
    assert result.returncode == 2 and 'Traceback' not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f'error: cannot bind --dist-url tcp://127.0.0.1:{port}')
    assert not (tmp_path / 'save').exists()


# ---- flags checked before anything starts (no processes) ----------------------------------------

def flags(**overrides):
    import train_teacher
    args = train_teacher.parse_args(['--model', 'resnet8', '--dataset', 'digits', '--batch_size', '64'])
    for key, value in overrides.items():
        setattr(args, key, value)
    return args


def fake_gpus(monkeypatch, count):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: count)


def test_plans(monkeypatch):
    plan = launch.make_plan(flags(multiprocessing_distributed=True, nproc_per_node=2))
    assert (plan.mode, plan.world_size, plan.backend, plan.devices) == ('spawn', 2, 'gloo', ('cpu', 'cpu'))
    # The seed command's --gpu_id 0,1,2,3 without CUDA: one CPU worker per listed GPU.
    plan = launch.make_plan(flags(multiprocessing_distributed=True, gpu_id='0,1,2,3'))
    assert plan.nproc == 4 and plan.devices == ('cpu',) * 4
    # Two nodes of two: node 1 runs global ranks 2 and 3.
    plan = launch.make_plan(flags(multiprocessing_distributed=True, nproc_per_node=2, world_size=2, rank=1))
    assert (plan.world_size, plan.first_rank) == (4, 2)
    assert launch.make_plan(flags()).mode == 'single'
    fake_gpus(monkeypatch, 4)
    plan = launch.make_plan(flags(multiprocessing_distributed=True, gpu_id='0,1,2,3'))
    assert plan.backend == 'nccl' and plan.devices == ('cuda:0', 'cuda:1', 'cuda:2', 'cuda:3')


@pytest.mark.parametrize('gpus,overrides,message', [
    (2, dict(multiprocessing_distributed=True, gpu_id='0,1,2,3'), 'this machine has 2 GPU(s)'),
    (4, dict(multiprocessing_distributed=True, gpu_id='0,1', nproc_per_node=4), 'more processes than the 2 GPU(s)'),
    (0, dict(multiprocessing_distributed=True, nproc_per_node=2, dist_backend='nccl'), 'nccl needs CUDA'),
    (0, dict(multiprocessing_distributed=True, nproc_per_node=3), 'must split evenly over the 3 processes'),
    (0, dict(world_size=2, rank=2), '--rank 2 must lie in 0..1'),
    (0, dict(multiprocessing_distributed=True, gpu_id='0,x'), 'comma-separated list of GPU numbers'),
])
def test_bad_distributed_flags_are_one_clear_error(monkeypatch, gpus, overrides, message):
    if gpus:
        fake_gpus(monkeypatch, gpus)
    with pytest.raises(KDZooError, match=message.replace('(', r'\(').replace(')', r'\)')):
        launch.make_plan(flags(**overrides))


@pytest.mark.slow
def test_dali_gpu_without_a_gpu_is_one_line(tmp_path):
    if torch.cuda.is_available():
        pytest.skip('a GPU is present')
    result = run_script('train_teacher.py', '--model', 'ResNet18', '--dataset', 'imagenet', '--data_folder', tmp_path,
                        '--dali', 'gpu', '--gpu_id', '0,1,2,3', '--multiprocessing-distributed', cwd=tmp_path)
    assert result.returncode == 2 and 'Traceback' not in result.stderr
    line, = result.stderr.strip().splitlines()
    # Without the package the line names the wheel; with it, the missing GPU.
    assert ('--dali gpu decodes on a GPU' in line) or ('pip install nvidia-dali-cuda' in line), line


def test_timeouts_default_or_come_from_the_environment(monkeypatch):
    monkeypatch.delenv('KDZOO_HANG_TIMEOUT', raising=False)
    monkeypatch.delenv('KDZOO_WAIT_TIMEOUT', raising=False)
    assert distributed.timeouts() == (40, 50)
    monkeypatch.setenv('KDZOO_HANG_TIMEOUT', '2.5')
    monkeypatch.setenv('KDZOO_WAIT_TIMEOUT', '7')
    assert distributed.timeouts() == (2.5, 7)
    for bad in ('0', '-1', 'soon', 'nan', 'inf'):
        monkeypatch.setenv('KDZOO_HANG_TIMEOUT', bad)
        with pytest.raises(KDZooError, match=f'KDZOO_HANG_TIMEOUT={bad} must be a positive number of seconds'):
            distributed.timeouts()
    # launch checks them before any process starts
    with pytest.raises(KDZooError, match='KDZOO_HANG_TIMEOUT=inf'):
        launch.launch(flags(multiprocessing_distributed=True, nproc_per_node=2), lambda args: None)


def test_a_short_hang_timeout_judges_a_worker_once_it_beats(monkeypatch):
    """The watcher on two stand-in workers that never exit: one beats once, then freezes, and is named after
    the short hang timeout; one that never beat (still starting) keeps the default allowance."""
    class Worker:  # what _watch reads of a spawned process
        exitcode, pid = None, 4242
    monkeypatch.setenv('KDZOO_HANG_TIMEOUT', '0.5')
    monkeypatch.setattr(distributed, 'HANG_TIMEOUT_S', 2)  # the default allowance, shortened for the test
    plan = launch.make_plan(flags(multiprocessing_distributed=True, nproc_per_node=2))
    started = time.time()
    slots = [[started, 0.0], [started, 0.0]]
    threading.Timer(0.2, lambda: slots[1].__setitem__(0, time.time())).start()  # rank 1's one beat
    failure = launch._watch([Worker(), Worker()], slots, plan, lambda: None)
    assert failure.startswith('rank 1 (pid 4242) stopped responding for 0.5 s (hung)')  # before rank 0's 2 s
    slots = [[time.time(), 0.0], [time.time(), 0.0]]
    assert launch._watch([Worker(), Worker()], slots, plan, lambda: None).startswith(
        'rank 0 (pid 4242) stopped responding for 2 s (hung)')
    assert time.time() - started > 2


def test_cross_rank_batchnorm_without_a_job_is_plain_batchnorm():
    plain = torch.nn.BatchNorm2d(3)
    converted = sync_bn.convert_sync_batchnorm(torch.nn.Sequential(torch.nn.BatchNorm2d(3)), torch.device('cpu'))
    assert isinstance(converted[0], sync_bn.CrossRankBatchNorm)
    x = torch.randn(4, 3, 5, 5)
    torch.testing.assert_close(converted[0](x), plain(x))
    torch.testing.assert_close(converted[0].running_var, plain.running_var)

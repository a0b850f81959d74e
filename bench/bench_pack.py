"""Packed distillation throughput: a pack of K students against the same K run one after another.

resnet32x4 -> resnet8x4 on CIFAR-100-sized random images (50 000, so CRD's memory banks have their real
size), batch 64, the real training step of train_student.py (engine/pack.py's pack_step; a separate run
is Trainer.train_step with its own teacher pass). Reported:
  - images/s counted per student (K students x batch x steps / seconds) for the pack and for the
    members one after another (each timed alone, times added), and their ratio;
  - the teacher's share of a step: each member's own teacher pass against its step alone, and the
    pack's shared pass against the pack's step;
  - memory per member: the state it keeps (weights, gradients, momentum, buffers such as CRD's
    banks), and on CUDA the peak allocated of each run alone and of the pack (divided by K).

    python bench/bench_pack.py                         # packs of 4 (kd crd dkd simkd) and 8
    python bench/bench_pack.py --sizes 1,4 --compile reduce-overhead    # torch.compile / CUDA graphs
    python bench/bench_pack.py --smoke                 # seconds: tiny models and data (tests)

Run it on an otherwise idle machine: the timings of the two sides are only comparable when nothing
else competes for the device.
"""
import os
import tempfile
import time

import torch
from tqdm import tqdm

import train_student
from dataset import build_data
from distiller_zoo import DISTILLERS
from engine.loop import Trainer
from engine.pack import Member, RandomState, SharedTeacher, build_member, pack_step
from engine.pack_args import shared_data_options
from engine.setup import sgd
from engine.student import build_objective, load_teacher
from helper.runtime import memory_format, resolve_precision, seed_everything
from models import model_dict
from fake_cifar import write_fake_cifar100
from results import kd_parser, one_compute_thread, save

FOUR = ['kd', 'crd', 'dkd', 'simkd']
EIGHT = FOUR + ['dist', 'attention', 'hint', 'similarity']


def timed(run, opts, device):
    """Seconds of ``run(opts.steps)`` after ``run(opts.warmup)``, with the device's peak memory counted afresh."""
    run(opts.warmup)
    peak_reset(device)
    sync(device)
    started = time.perf_counter()
    run(opts.steps)
    sync(device)
    return time.perf_counter() - started


def sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize()


def peak_reset(device):
    if device.type == 'cuda':
        sync(device)
        torch.cuda.reset_peak_memory_stats()


def peak_mb(device):
    return torch.cuda.max_memory_allocated() / 2**20 if device.type == 'cuda' else None


def state_mb(objective, optimizer):
    """Memory a member keeps between steps: its trainable modules' parameters, gradients and buffers
    (CRD's banks) and the optimiser's momentum; the shared teacher is not counted."""
    tensors = {}
    for module in objective.trainable_modules():
        for t in [*module.parameters(), *module.buffers()]:
            tensors[t.data_ptr()] = t.numel() * t.element_size()
            if getattr(t, 'grad', None) is not None:
                tensors[t.grad.data_ptr()] = t.grad.numel() * t.grad.element_size()
    for state in optimizer.state.values():
        for t in state.values():
            if torch.is_tensor(t):
                tensors[t.data_ptr()] = t.numel() * t.element_size()
    return sum(tensors.values()) / 2**20


def parsed(opts, distill, data_folder, teacher_path):
    """train_student.py's arguments for ``distill`` (a list makes a pack; 'kd:trial=b' a pack of one)."""
    argv = ['--path_t', teacher_path, '--model_t', opts.teacher, '--model_s', opts.student, '--distill', distill,
            '--data_folder', data_folder, '--batch_size', str(opts.batch_size), '--precision', opts.precision,
            '--gpu_id', '0', '--epochs', '1', '--nce_k', str(opts.nce_k), '--seed', '0']
    return train_student.parse_args(argv)


def compile_networks(modules, mode):
    """torch.compile every network in place (``mode``: a torch.compile mode, or 'eager' for the eager
    backend, which checks the wiring without a compiler)."""
    for module in modules:
        if mode == 'eager':
            module.compile(backend='eager')
        else:
            module.compile(mode=mode)


def batches(loader, count):
    """``count`` batches from the loader, epoch after epoch."""
    epoch = 1
    while True:
        loader.set_epoch(epoch)
        for batch in loader:
            yield batch
            count -= 1
            if count == 0:
                return
        epoch += 1


def time_pack(opts, names, data_folder, teacher_path, device):
    """Images/s (per student) of one pack of ``names``, its step time, teacher time and memory."""
    pack = parsed(opts, ','.join(names) if len(names) > 1 else f'{names[0]}:trial=pack', data_folder,
                  teacher_path)
    precision = resolve_precision(opts.precision, device)
    union, reads = shared_data_options(pack.members, pack.labels)
    seed_everything(0, False)
    data = build_data('cifar100', data_folder, opts.batch_size, device, seed=0, drop_last=True,
                      channels_last=precision != 'fp32', **{k: v for k, v in union.items() if k != 'drop_last'})
    teacher = load_teacher(pack, data.num_classes, device, memory_format(precision))
    shared = SharedTeacher(teacher)
    start_state = RandomState(device)
    members = []
    for label, args, read in zip(pack.labels, pack.members, reads):
        m = Member(label, args, read)
        build_member(m, data, union, start_state, shared, device, precision)
        m.trainers['main'] = Trainer(m.objective, m.data, sgd(m.objective.trainable_modules(), args), args,
                                     None, None, device, precision)
        members.append(m)
    if opts.compile != 'none':
        compile_networks([teacher] + [m.objective.model for m in members], opts.compile)
    progress = tqdm(disable=True)
    for m in members:
        m.trainers['main'].begin_epoch(1)

    def run(count):
        for step, batch in enumerate(batches(data.train, count), 1):
            pack_step(members, 'main', batch, 1, step, shared, device, precision, progress)
    seconds = timed(run, opts, device)
    requests = [m.objective.teacher_request() for m in members]
    teacher_s = time_teacher(shared, requests, data, opts, device, precision)
    stopped = [m.label for m in members if m.stopped]
    return dict(members=names, images_per_s=len(names) * opts.steps * opts.batch_size / seconds,
                step_ms=1000 * seconds / opts.steps, teacher_ms=1000 * teacher_s, peak_mb=peak_mb(device),
                peak_mb_per_member=peak_mb(device) / len(names) if device.type == 'cuda' else None,
                state_mb={m.label: state_mb(m.objective, m.trainers['main'].optimizer) for m in members},
                precision=precision, stopped=stopped)


def time_teacher(shared, requests, data, opts, device, precision):
    """Seconds per batch of the teacher's shared pass alone (the union of ``requests``)."""
    from helper.runtime import autocast
    loaded = list(batches(data.train, max(opts.steps // 4, 1)))
    for batch in loaded[:1]:
        with autocast(device, precision):
            shared.compute(batch, requests)
    sync(device)
    started = time.perf_counter()
    for batch in loaded:
        with autocast(device, precision):
            shared.compute(batch, requests)
        shared.clear()
    sync(device)
    return (time.perf_counter() - started) / len(loaded)


def time_alone(opts, name, data_folder, teacher_path, device):
    """The member as its single run trains: its own loader, its own teacher pass each step."""
    args = parsed(opts, name, data_folder, teacher_path)
    precision = resolve_precision(opts.precision, device)
    seed_everything(0, False)
    options = DISTILLERS[name].data_options(args)
    options.pop('drop_last', None)
    data = build_data('cifar100', data_folder, opts.batch_size, device, seed=0, drop_last=True,
                      channels_last=precision != 'fp32', **options)
    objective = build_objective(args, data, device, precision)
    if opts.compile != 'none':
        compile_networks([objective.teacher, objective.model], opts.compile)
    trainer = Trainer(objective, data, sgd(objective.trainable_modules(), args), args, None, None, device,
                      precision)
    progress = tqdm(disable=True)
    trainer.begin_epoch(1)

    def run(count):
        for step, batch in enumerate(batches(data.train, count), 1):
            trainer.train_step(batch, 1, step, progress)
    seconds = timed(run, opts, device)
    teacher_s = time_teacher(SharedTeacher(objective.teacher), [objective.teacher_request()], data, opts, device,
                             precision)
    step_ms = 1000 * seconds / opts.steps
    return dict(images_per_s=opts.steps * opts.batch_size / seconds, step_ms=step_ms, teacher_ms=1000 * teacher_s,
                teacher_share=1000 * teacher_s / step_ms, peak_mb=peak_mb(device),
                state_mb=state_mb(objective, trainer.optimizer), precision=precision)


def parse(argv=None):
    parser = kd_parser(__doc__)
    parser.add_argument('--steps', type=int, default=40, help='timed steps of each side')
    parser.add_argument('--warmup', type=int, default=5)
    parser.add_argument('--images', type=int, default=50000, help='training images (CIFAR-100 has 50 000)')
    parser.add_argument('--nce_k', type=int, default=16384, help="CRD's negatives (RepDistiller's default)")
    parser.add_argument('--members', default=','.join(EIGHT), help='the methods, in order')
    parser.add_argument('--sizes', default='4,8', help="pack sizes: packs of the first K members ('' for none: "
                        "each member alone only)")
    parser.add_argument('--no-alone', dest='alone', action='store_false',
                        help='time the packs only (no members alone, so no speed-up)')
    parser.add_argument('--compile', default='none',
                        help="torch.compile the networks: 'none', 'eager' (wiring check), or a mode such as "
                             "'default' or 'reduce-overhead' (CUDA graphs)")
    parser.add_argument('--smoke', action='store_true',
                        help='seconds-long check of the script: resnet8 -> resnet8, 200 images, 2 steps')
    opts = parser.parse_args(argv)
    if opts.smoke:
        opts.teacher = opts.student = 'resnet8'
        opts.images, opts.batch_size, opts.steps, opts.warmup, opts.nce_k = 200, 8, 2, 1, 16
    opts.members = [m for m in opts.members.split(',') if m]
    opts.sizes = [int(k) for k in opts.sizes.split(',') if k]
    if any(not 1 <= k <= len(opts.members) for k in opts.sizes):
        parser.error(f"--sizes must lie in 1..{len(opts.members)}")
    return opts


def main(argv=None):
    one_compute_thread()
    opts = parse(argv)
    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    names = opts.members[:max(opts.sizes, default=len(opts.members))]
    with tempfile.TemporaryDirectory() as tmp:
        data_folder = write_fake_cifar100(os.path.join(tmp, 'data'), n_train=opts.images, n_test=100)
        folder = os.path.join(tmp, f'{opts.teacher}_vanilla')
        os.makedirs(folder)
        teacher_path = os.path.join(folder, f'{opts.teacher}_best.pth')
        torch.save({'model': model_dict[opts.teacher](num_classes=100).state_dict()}, teacher_path)
        alone = {name: time_alone(opts, name, data_folder, teacher_path, device) for name in names
                 if opts.alone}
        packs = {k: time_pack(opts, names[:k], data_folder, teacher_path, device) for k in opts.sizes}
    where = torch.cuda.get_device_name() if device.type == 'cuda' else f'CPU ({torch.get_num_threads()} threads)'
    print(f"{opts.teacher} -> {opts.student}, batch {opts.batch_size}, {opts.steps} timed steps, {opts.images} "
          f"images, compile {opts.compile}, on {where}")
    for name, r in alone.items():
        mem = f", peak {r['peak_mb']:.0f} MB" if r['peak_mb'] is not None else ''
        print(f"  {name:>10} alone: {r['images_per_s']:8.1f} images/s  step {r['step_ms']:7.1f} ms (teacher "
              f"{100 * r['teacher_share']:3.0f}%)  state {r['state_mb']:6.1f} MB{mem}")
    result = dict(device=where, torch=torch.__version__, teacher=opts.teacher, student=opts.student,
                  batch_size=opts.batch_size, steps=opts.steps, images=opts.images, compile=opts.compile,
                  alone=alone, packs={})
    for k, r in packs.items():
        members = names[:k]
        r.update(teacher_share_of_pack_step=r['teacher_ms'] / r['step_ms'])
        against = ''
        if alone:
            sequential_s = sum(opts.steps * opts.batch_size / alone[n]['images_per_s'] for n in members)
            sequential = k * opts.steps * opts.batch_size / sequential_s
            r.update(sequential_images_per_s=sequential, speedup=r['images_per_s'] / sequential)
            against = f" {sequential:8.1f} one after another: {r['speedup']:.2f}x;"
        result['packs'][k] = r
        mem = f"; peak {r['peak_mb']:.0f} MB ({r['peak_mb_per_member']:.0f} MB a member)" if r['peak_mb'] else ''
        print(f"  pack of {k} ({' '.join(members)}): {r['images_per_s']:8.1f} images/s;{against} teacher pass "
              f"{r['teacher_ms']:.1f} ms = {100 * r['teacher_share_of_pack_step']:.0f}% of the pack step{mem}")
        if r['stopped']:
            print(f"    stopped on a non-finite loss: {', '.join(r['stopped'])}")
    return save(result, opts.json)


if __name__ == '__main__':
    main()

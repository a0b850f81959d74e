"""KD throughput: train_student.py's own training step against a plain RepDistiller-style loop.

Both train resnet8x4 from a resnet32x4 teacher with KD (-r 0.1 -a 0.9, T 4) on the same CIFAR-100-sized
images and batch size, in one process, one after the other; images/s and (on CUDA) peak memory.

    python bench/bench_kd.py                       # CPU: 60 timed steps each
    python bench/bench_kd.py --steps 300 --workers 8 --json bench/kd_gpu.json   # on a GPU machine
"""
import os
import tempfile
import time

import torch
from tqdm import tqdm

import train_student
from dataset import build_data
from dataset.cifar100 import read_split
from engine.loop import Trainer
from helper.runtime import resolve_precision
from engine.setup import sgd
from models import model_dict
from plain_loop import plain_kd_step, plain_loader
from fake_cifar import write_fake_cifar100
from results import kd_parser, one_compute_thread, save


def sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize()


class LimitedLoader:
    """The first ``steps`` batches of a loader, so the real training loop can be timed on a slice."""

    def __init__(self, loader, steps):
        self.loader, self.steps = loader, steps

    def set_epoch(self, epoch):
        self.loader.set_epoch(epoch)

    def __len__(self):
        return self.steps

    def __iter__(self):
        for step, batch in enumerate(self.loader):
            if step == self.steps:
                return
            yield batch


def time_kdzoo(args, data_folder, teacher_path, device):
    argv = ['--path_t', teacher_path, '--model_t', args.teacher, '--model_s', args.student, '--distill', 'kd',
            '--data_folder', data_folder, '--batch_size', str(args.batch_size), '--precision', args.precision,
            '--gpu_id', '0', '--epochs', '1']
    opts = train_student.parse_args(argv)
    opts.seed = 0
    precision = resolve_precision(opts.precision, device)
    data = build_data('cifar100', data_folder, opts.batch_size, device, seed=0, drop_last=True,
                      channels_last=precision != 'fp32')
    objective = train_student.build_objective(opts, data, device, precision)
    optimizer = sgd(objective.trainable_modules(), opts)
    trainer = Trainer(objective, data, optimizer, opts, files=None, logger=None, device=device,
                      precision=precision)
    progress = tqdm(disable=True)
    trainer.data = type(data)(LimitedLoader(data.train, args.warmup), data.val, data.num_classes, data.num_train,
                              data.train_labels)
    trainer.train_epoch(1, progress)  # warm-up: kernels chosen, caches filled
    trainer.data = type(data)(LimitedLoader(data.train, args.steps), data.val, data.num_classes, data.num_train,
                              data.train_labels)
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats()
    sync(device)
    start = time.perf_counter()
    trainer.train_epoch(2, progress)
    sync(device)
    seconds = time.perf_counter() - start
    return dict(images_per_s=args.steps * args.batch_size / seconds, precision=precision,
                peak_mem_mb=torch.cuda.max_memory_allocated() / 2**20 if device.type == 'cuda' else None)


def time_plain(args, data_folder, device):
    images, labels = read_split(os.path.join(data_folder, 'cifar-100-python'), 'train')
    loader = plain_loader(images, labels, args.batch_size, args.workers)
    torch.manual_seed(0)
    student = model_dict[args.student](num_classes=100).to(device).train()
    teacher = model_dict[args.teacher](num_classes=100).to(device).eval()
    optimizer = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    batches = iter(loader)

    def run(steps):
        nonlocal batches
        for _ in range(steps):
            try:
                x, y, _ = next(batches)
            except StopIteration:
                batches = iter(loader)
                x, y, _ = next(batches)
            plain_kd_step(student, teacher, optimizer, x, y, device)
    run(args.warmup)
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats()
    sync(device)
    start = time.perf_counter()
    run(args.steps)
    sync(device)
    seconds = time.perf_counter() - start
    return dict(images_per_s=args.steps * args.batch_size / seconds, precision='fp32',
                peak_mem_mb=torch.cuda.max_memory_allocated() / 2**20 if device.type == 'cuda' else None)


def main(argv=None):
    one_compute_thread()
    parser = kd_parser(__doc__)
    parser.add_argument('--steps', type=int, default=60)
    parser.add_argument('--warmup', type=int, default=10)
    parser.add_argument('--workers', type=int, default=2, help="plain loop's DataLoader workers")
    parser.add_argument('--images', type=int, default=10000, help='size of the synthetic training set')
    parser.add_argument('--no-plain', dest='plain', action='store_false',
                        help='time kdzoo only (e.g. once per --precision)')
    args = parser.parse_args(argv)
    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    with tempfile.TemporaryDirectory() as tmp:
        data_folder = write_fake_cifar100(os.path.join(tmp, 'data'), n_train=args.images, n_test=100)
        teacher_path = os.path.join(tmp, 'teacher.pth')
        torch.save({'model': model_dict[args.teacher](num_classes=100).state_dict()}, teacher_path)
        plain = time_plain(args, data_folder, device) if args.plain else None
        ours = time_kdzoo(args, data_folder, teacher_path, device)
    name = torch.cuda.get_device_name() if device.type == 'cuda' else f'CPU ({torch.get_num_threads()} threads)'
    result = dict(device=name, torch=torch.__version__, teacher=args.teacher, student=args.student,
                  batch_size=args.batch_size, steps=args.steps, plain_workers=args.workers, plain=plain,
                  kdzoo=ours, speedup=ours['images_per_s'] / plain['images_per_s'] if plain else None)
    print(f"{args.teacher} -> {args.student} KD, batch {args.batch_size}, {args.steps} steps on {name}")
    if plain:
        print(f"  plain RepDistiller-style loop ({args.workers} workers, fp32): {plain['images_per_s']:8.1f} images/s")
    print(f"  kdzoo train_student.py step ({ours['precision']}):        {ours['images_per_s']:8.1f} images/s")
    if plain:
        print(f"  speed-up: {result['speedup']:.2f}x")
    return save(result, args.json)


if __name__ == '__main__':
    main()

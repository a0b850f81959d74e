"""Wall time of real train_student.py runs over a few epochs, extrapolated to the 240-epoch CIFAR-100 recipe.

Runs train_student.py (in this process) on CIFAR-100-sized random data (50 000 training, 10 000 test
images) with an untrained teacher checkpoint: a single KD run, then a pack (kd, crd, dkd, simkd by
default). Each epoch's time comes from the run's own metrics.json (training plus the epoch's validation);
the first epoch pays for warm-up (cuDNN's algorithm search, caches), so the 240-epoch estimate is
epoch 1 + 239 x the last epoch.

    python bench/epoch_time.py                        # resnet32x4 -> resnet8x4, 2 epochs each
    python bench/epoch_time.py --smoke                # seconds: resnet8 -> resnet8 on 200 images
"""
import json
import os
import tempfile

import torch

import train_student
from models import model_dict
from fake_cifar import write_fake_cifar100
from results import kd_parser, one_compute_thread, save

RECIPE_EPOCHS = 240


def epoch_times(save_root):
    """{run folder: [epoch times]} of every student run under ``save_root``."""
    folder = os.path.join(save_root, 'students', 'models')
    times = {}
    for run in sorted(os.listdir(folder)):
        with open(os.path.join(folder, run, 'metrics.json')) as f:
            times[run] = [record['epoch_time'] for record in json.load(f)['history']]
    return times


def extrapolate(times, epochs=RECIPE_EPOCHS):
    return times[0] + (epochs - 1) * times[-1]


def main(argv=None):
    one_compute_thread()
    parser = kd_parser(__doc__)
    parser.add_argument('--epochs', type=int, default=2)
    parser.add_argument('--images', type=int, default=50000)
    parser.add_argument('--test_images', type=int, default=10000)
    parser.add_argument('--pack', default='kd,crd,dkd,simkd', help="the pack to time after KD ('' for none)")
    parser.add_argument('--smoke', action='store_true')
    opts = parser.parse_args(argv)
    if opts.smoke:
        opts.teacher = opts.student = 'resnet8'
        opts.images, opts.test_images, opts.batch_size = 200, 40, 32
    with tempfile.TemporaryDirectory() as tmp:
        data = write_fake_cifar100(os.path.join(tmp, 'data'), n_train=opts.images, n_test=opts.test_images)
        folder = os.path.join(tmp, f'{opts.teacher}_vanilla')
        os.makedirs(folder)
        teacher = os.path.join(folder, f'{opts.teacher}_best.pth')
        torch.save({'model': model_dict[opts.teacher](num_classes=100).state_dict()}, teacher)
        common = ['--path_t', teacher, '--model_s', opts.student, '--data_folder', data, '--epochs', str(opts.epochs),
                  '--batch_size', str(opts.batch_size), '--precision', opts.precision, '--seed', '0',
                  '--print_freq', '100000']
        if opts.smoke:
            common += ['--nce_k', '16']
        runs = {'kd': ['--distill', 'kd']}
        if opts.pack:
            runs[f'pack {opts.pack}'] = ['--distill', opts.pack]
        result = dict(device=torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU',
                      teacher=opts.teacher, student=opts.student, images=opts.images, epochs=opts.epochs,
                      batch_size=opts.batch_size, runs={})
        for name, flags in runs.items():
            root = os.path.join(tmp, name.replace(' ', '_').replace(',', '_'))
            train_student.main([*common, *flags, '--save_root', root])
            times = epoch_times(root)
            pack_epoch = [max(t[i] for t in times.values()) for i in range(opts.epochs)]  # members share an epoch
            result['runs'][name] = dict(students=len(times), epoch_times_s=pack_epoch,
                                        hours_for_240_epochs=extrapolate(pack_epoch) / 3600)
    print(f"{opts.teacher} -> {opts.student}, {opts.images} images, batch {opts.batch_size}, on {result['device']}")
    for name, r in result['runs'].items():
        epochs = ', '.join(f'{t:.1f}' for t in r['epoch_times_s'])
        print(f"  {name} ({r['students']} student{'s' if r['students'] > 1 else ''}): epochs {epochs} s -> "
              f"{RECIPE_EPOCHS} epochs in {r['hours_for_240_epochs']:.2f} h "
              f"({r['hours_for_240_epochs'] / r['students']:.2f} h a student)")
    return save(result, opts.json)


if __name__ == '__main__':
    main()

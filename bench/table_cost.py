"""What the CIFAR-100 tables cost, packed and unpacked: teacher passes and compute, counted from the
table scripts' own commands (no timing, nothing trained).

For every script under scripts/ that distils students (``table_scripts``), the
commands it prints with DRY_RUN=1, once packed (the default) and once with PACK=0, are parsed by
train_student.py's own parser; from each run's settled arguments:
  - teacher image-passes, counted by running the pack's own ``SharedTeacher`` (a single run is a pack
    of one) on the requests the methods themselves make, with a stand-in teacher that counts images: an
    unpacked run's teacher sees every training image once per epoch (twice for NTCE-KD: the strong view
    too; four times for SSKD: the rotations; never for NORM's CE-only rows) plus its init stage (AB, FT,
    FSP, SSKD: --init_epochs more) and one pass over the 10 000 test images (the teacher's accuracy at
    the start). A pack's teacher sees each image once per epoch for all its members (a second time if
    members read pre-ReLU maps and others not, and once more per extra view), for as many epochs as its
    longest member, plus the init stage of its two-stage members and one test-set pass;
  - compute: forward FLOPs of the networks on one 32x32 image (torch.utils.flop_counter), a student's
    training image costing 3 forwards (forward and backward) and each test image one; the methods' own
    heads and losses are not counted (they are small next to the networks), nor is data loading.

    python bench/table_cost.py                        # every CIFAR-100 table, one trial
    python bench/table_cost.py --scripts run_simkd_table.sh --pack_max 0
"""
import argparse
import collections
import glob
import os
import shlex
import subprocess

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

import train_student
from dataset.batches import rotated_views
from distiller_zoo import DISTILLERS, Distiller
from engine.pack import SharedTeacher
from models import model_dict

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the checkout, whose scripts/ it reads
TRAIN, TEST = 50000, 10000  # CIFAR-100


def table_scripts():
    """The scripts that distil students: they hand cells to common.sh's ``student_cell`` (directly or
    through its ``pair_cells`` loop)."""
    return sorted(p for p in glob.glob(os.path.join(REPO, 'scripts', 'run_*.sh'))
                  if any(word in open(p).read() for word in ('student_cell', 'pair_cells')))


def commands(script, **env):
    """The train_student.py argument namespaces a script runs (one per process)."""
    result = subprocess.run(['bash', script], env=dict(os.environ, DRY_RUN='1', TRIALS='0', **env),
                            capture_output=True, text=True, timeout=300, check=True)
    parsed = []
    for line in result.stdout.splitlines():
        words = shlex.split(line)
        if len(words) > 1 and words[1] == 'train_student.py':
            parsed.append(train_student.parse_args(words[2:]))
    return parsed


def method_stand_in(args):
    """The run's method with only its loss weights set, no networks built: enough for its own
    ``teacher_request``/``init_teacher_request`` (NORM's CE-only rows need no teacher; SSKD's teacher reads
    four rotated views). A method whose request reads more of its state fails here loudly."""
    cls = DISTILLERS[args.distill]
    method = cls.__new__(cls)
    nn.Module.__init__(method)
    method.gamma, method.alpha, method.beta = args.gamma, args.alpha, args.beta
    return method


def has_init_stage(args):
    cls = DISTILLERS[args.distill]
    return args.init_epochs > 0 and any('init_modules' in vars(k) for k in cls.__mro__ if k is not Distiller)


class CountingTeacher:
    """Stands in for the teacher network: counts the images it is run on."""

    def __init__(self):
        self.images = 0

    def __call__(self, images, is_feat=False, preact=False):
        self.images += len(images)
        logits = images.new_zeros(len(images), 1)
        return ([], logits) if is_feat else logits


class OneImage:
    """A batch of one training image, with the views a request may read (the strong one, the rotations)."""
    images = torch.zeros(1, 3, 4, 4)

    def view(self, name):
        return rotated_views(self.images) if name == 'rotations' else self.images


def images_per_image(requests):
    """Teacher image-passes per training image when one ``SharedTeacher`` (engine/pack.py) serves these
    requests; for one request, what ``run_teacher`` does for a single run."""
    teacher = CountingTeacher()
    SharedTeacher(teacher).compute(OneImage(), requests)
    return teacher.images


def teacher_images(process):
    """Teacher image-passes of one process: a single run or a pack."""
    members = getattr(process, 'members', [process])
    methods = {id(m): method_stand_in(m) for m in members}
    total = TEST  # the teacher's test accuracy, once
    for epoch in range(1, max(m.epochs for m in members) + 1):
        total += TRAIN * images_per_image([methods[id(m)].teacher_request() for m in members if m.epochs >= epoch])
    init = [m for m in members if has_init_stage(m)]
    for epoch in range(1, max((m.init_epochs for m in init), default=0) + 1):
        total += TRAIN * images_per_image([methods[id(m)].init_teacher_request() for m in init
                                           if m.init_epochs >= epoch])
    return total


_FLOPS = {}


def forward_flops(name):
    if name not in _FLOPS:
        net = model_dict[name](num_classes=100).eval()
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            net(torch.zeros(1, 3, 32, 32))
        _FLOPS[name] = counter.get_total_flops()
    return _FLOPS[name]


def student_flops(args):
    request = method_stand_in(args).teacher_request()
    # NTCE-KD's student also learns on the strong view; SSKD's on the four rotations the teacher reads
    views = (len(OneImage().view(request.view)) if request.view else 1) + len(request.views)
    return forward_flops(args.model_s) * (3 * TRAIN * views * args.epochs + TEST * args.epochs)


def cost(processes):
    runs = [m for p in processes for m in getattr(p, 'members', [p])]
    teacher = sum(teacher_images(p) * forward_flops(p.model_t) for p in processes)
    return dict(processes=len(processes), runs=len(runs),
                teacher_images=sum(teacher_images(p) for p in processes), teacher_flops=teacher,
                student_flops=sum(student_flops(m) for m in runs))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--scripts', default=None, help='comma-separated script names (default: every table)')
    parser.add_argument('--pack_max', default='8', help="the scripts' PACK_MAX (0: no limit)")
    opts = parser.parse_args(argv)
    scripts = table_scripts()
    if opts.scripts:
        scripts = [s for s in scripts if os.path.basename(s) in opts.scripts.split(',')]
    rows = collections.OrderedDict()
    for script in scripts:
        single = [p for p in commands(script, PACK='0') if p.dataset == 'cifar100']
        packed = [p for p in commands(script, PACK_MAX=opts.pack_max) if p.dataset == 'cifar100']
        if single:
            rows[os.path.basename(script)] = (cost(single), cost(packed))
    total = tuple({k: sum(row[i][k] for row in rows.values()) for k in rows[next(iter(rows))][i]}
                  for i in (0, 1))
    rows['all'] = total
    peta = 1e15
    print(f"One trial (TRIALS=0), CIFAR-100, PACK_MAX={opts.pack_max}; FLOPs from forward passes (students: 3 "
          f"forwards per training image). PFLOP = 10^15 floating-point operations.\n")
    print("| script | runs | processes (unpacked → packed) | teacher image-passes, 10^6 (unpacked → packed) "
          "| teacher PFLOP | student PFLOP (same both ways) | total PFLOP | saving |")
    print("|---|---|---|---|---|---|---|---|")
    for name, (one, pack) in rows.items():
        whole_one = one['teacher_flops'] + one['student_flops']
        whole_pack = pack['teacher_flops'] + pack['student_flops']
        print(f"| {'**all**' if name == 'all' else f'`{name}`'} | {one['runs']} | {one['processes']} → "
              f"{pack['processes']} | {one['teacher_images'] / 1e6:,.0f} → {pack['teacher_images'] / 1e6:,.0f} | "
              f"{one['teacher_flops'] / peta:,.1f} → {pack['teacher_flops'] / peta:,.1f} | "
              f"{one['student_flops'] / peta:,.1f} | {whole_one / peta:,.1f} → {whole_pack / peta:,.1f} | "
              f"{100 * (1 - whole_pack / whole_one):.0f}% |")
    return rows


if __name__ == '__main__':
    main()

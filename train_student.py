"""Distil a student from a trained teacher with any method of distiller_zoo/.

    python train_student.py --path_t ./save/teachers/models/resnet32x4_vanilla/resnet32x4_best.pth \\
        --distill kd --model_s resnet8x4 -r 0.1 -a 0.9 -b 0 --trial 1
    python train_student.py --path-t ./save/teachers/models/ResNet50_vanilla/ResNet50_best.pth --dataset imagenet \\
        --model_s ResNet18 --distill simkd -c 0 -d 0 -b 1 --gpu_id 0,1,2,3 --multiprocessing-distributed \\
        --dist-url tcp://127.0.0.1:23444 --dali gpu                         # the SimKD repo's ImageNet command

The loss is gamma * CE + alpha * KD + beta * (the method's loss), RepDistiller's -r/-a/-b (the SimKD
repo's -c/-d/-b). Weights not given default to those of the script behind the method's published
numbers; the run prints the weights it uses.
"""
import difflib
import os
import sys

import torch

from distiller_zoo import DISTILLERS
from distiller_zoo.base import run_network
from helper.args import parser_for, resolve_common_args
from helper.checkpoint import atomic_save, check_file, load_weights
from helper.distributed import current, launch
from helper.errors import KDZooError, run_cli
from helper.logger import RunLogger
from helper.loop import Trainer, evaluate_predictions
from helper.objective import DistillObjective, InitStageObjective
from helper.run_files import RunFiles, student_run_name
from helper.runtime import memory_format
from helper.setup import count_parameters, devices_and_data, seed_for_run, sgd, synchronise_batchnorm
from models.registry import build_model, check_model_name, model_name_from_path


def parse_args(argv=None):
    parser = parser_for(__doc__.splitlines()[0])
    net = parser.add_argument_group('teacher and student')
    net.add_argument('--path_t', '--path-t', dest='path_t', default=None, help='teacher checkpoint')
    net.add_argument('--model_t', default=None, help='teacher architecture (default: parsed from --path_t)')
    net.add_argument('--model_s', default='resnet8', help='student architecture')
    net.add_argument('--skip-validation', '--skip_validation', dest='skip_validation', action='store_true',
                     help='do not evaluate the teacher before training')

    method = parser.add_argument_group('distillation')
    method.add_argument('--distill', default='kd', help=f"method: {', '.join(sorted(DISTILLERS))}")
    method.add_argument('-r', '--gamma', '-c', '--cls', dest='gamma', type=float, default=None,
                        help='weight of the cross-entropy on labels')
    method.add_argument('-a', '--alpha', '-d', '--div', dest='alpha', type=float, default=None,
                        help='weight of the KD (KL) term')
    method.add_argument('-b', '--beta', type=float, default=None, help="weight of the method's own loss")
    method.add_argument('--kd_T', type=float, default=4, help='KD temperature')
    method.add_argument('--hint_layer', type=int, default=2, help='FitNet feature index (SimKD repo: 1)')
    method.add_argument('--init_epochs', type=int, default=30, help='init stage of AB, FT, FSP')
    method.add_argument('-f', '--factor', type=int, default=2, help="SimKD projector's channel factor")
    method.add_argument('-s', '--soft', type=float, default=1.0, help="SemCKD's attention temperature")
    crd = parser.add_argument_group('CRD')
    crd.add_argument('--feat_dim', type=int, default=128, help='embedding width')
    crd.add_argument('--mode', choices=('exact', 'relax'), default='exact', help='positive sampling')
    crd.add_argument('--nce_k', type=int, default=16384, help='negatives per anchor')
    crd.add_argument('--nce_t', type=float, default=0.07, help='temperature')
    crd.add_argument('--nce_m', type=float, default=0.5, help='memory momentum')
    crd.add_argument('--crd_bank', choices=('fp32', 'fp16', 'bf16'), default='fp32',
                     help='dtype of the two memory banks (half halves their memory; see README)')

    for method_cls in dict.fromkeys(DISTILLERS.values()):  # each class once, aliases or not
        method_cls.add_arguments(parser)
    argv = sys.argv[1:] if argv is None else list(argv)
    chosen = parser.parse_known_args(argv)[0].distill
    if chosen in DISTILLERS:
        argv = DISTILLERS[chosen].rewrite_argv(argv)
    args = parser.parse_args(argv)
    if args.path_t is None:
        raise KDZooError("no teacher given; pass --path_t <teacher checkpoint>")
    if os.path.isdir(args.path_t):  # said before the architecture is parsed from the path, which a folder is not
        check_file(args.path_t, '--path_t')
    if args.distill not in DISTILLERS:
        close = difflib.get_close_matches(args.distill, list(DISTILLERS), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ''
        raise KDZooError(f"unknown --distill '{args.distill}'{hint}; known: {', '.join(sorted(DISTILLERS))}")
    check_model_name(args.model_s, args.dataset, '--model_s')
    args.model_t = args.model_t or model_name_from_path(args.path_t)
    if args.model_t is None:
        raise KDZooError(f"cannot tell the teacher's architecture from '{args.path_t}'; pass --model_t")
    check_model_name(args.model_t, args.dataset, '--model_t')
    args.weights_note = resolve_weights(args, DISTILLERS[args.distill])
    if args.init_epochs < 0:
        raise KDZooError(f"--init_epochs cannot be negative, got {args.init_epochs}")
    if args.kd_T <= 0:
        raise KDZooError(f"--kd_T must be positive, got {args.kd_T}")
    return resolve_common_args(args, args.model_s)


def resolve_weights(args, method):
    """Fill -r/-a/-b not given with the method's defaults; refuse negative weights."""
    defaults = dict(zip(('gamma', 'alpha', 'beta'), method.defaults_for(args)))
    taken = [key for key in defaults if getattr(args, key) is None]
    for key in taken:
        setattr(args, key, defaults[key])
    for key, flag in (('gamma', '-r/-c'), ('alpha', '-a/-d'), ('beta', '-b')):
        if getattr(args, key) < 0:
            raise KDZooError(f"the loss weight {flag} cannot be negative, got {getattr(args, key)}")
    note = f"weights: CE {args.gamma:g}, KD {args.alpha:g}, {method.name} {args.beta:g}"
    if taken:
        note += f" ({', '.join(taken)} from the {method.name} defaults)"
    return note


def load_teacher(args, num_classes, device, fmt):
    teacher = build_model(args.model_t, num_classes, args.dataset, '--model_t')
    load_weights(teacher, args.path_t, args.model_t, flag='--path_t')
    return teacher.to(device, memory_format=fmt).eval().requires_grad_(False)


@torch.no_grad()
def probe(student, teacher, method_cls, dataset, device, fmt):
    """One eval-mode forward of both networks on random images: feature shapes for the method's modules."""
    size = 224 if dataset == 'imagenet' else 32
    images = torch.randn(2, 3, size, size, device=device).contiguous(memory_format=fmt)
    student.eval()
    out_s = run_network(student, images, True, method_cls.preact)
    out_t = run_network(teacher, images, True, method_cls.preact)
    student.train()
    return out_s, out_t


def build_objective(args, data, device, precision):
    """Teacher (loaded, frozen), student and the method's modules, wired into one objective."""
    method_cls = DISTILLERS[args.distill]
    fmt = memory_format(precision)
    teacher = load_teacher(args, data.num_classes, device, fmt)
    student = build_model(args.model_s, data.num_classes, args.dataset, '--model_s').to(device, memory_format=fmt)
    probe_s, probe_t = probe(student, teacher, method_cls, args.dataset, device, fmt)
    method = method_cls(args, student, teacher, probe_s, probe_t, data).to(device)
    return DistillObjective(student, teacher, method)


def main(argv=None):
    """Parse, then train here or in one process per GPU (--multiprocessing-distributed, torchrun)."""
    return launch(parse_args(argv), train)


def train(args):
    """One process's run: all of it in a single process, or one rank of a multi-process job."""
    method_cls = DISTILLERS[args.distill]
    check_file(args.path_t, '--path_t')  # a missing teacher, or a folder, is said before any data is read
    run_name = student_run_name(args.model_s, args.model_t, args.dataset, args.distill, args.gamma, args.alpha,
                                args.beta, args.trial)
    files = RunFiles(args.save_root, 'students', run_name, args.model_s)
    files.refuse_overwrite(args.resume, args.overwrite)
    resume_path = files.resume_path(args.resume, args.epochs) if args.resume else None
    seed_for_run(args, resume_path)
    device, precision, data = devices_and_data(args, **method_cls.data_options(args))
    objective = build_objective(args, data, device, precision)
    synchronise_batchnorm(objective, args, device)
    student, teacher = objective.model, objective.teacher
    num_params = count_parameters(student)
    print(f"student {args.model_s} ({num_params / 1e6:.2f}M parameters) <- teacher {args.model_t} by "
          f"{args.distill}; {args.weights_note}; {args.dataset}; {device.type}, {precision}; {args.lr_note}")
    if not args.skip_validation:
        top1, top5, _ = evaluate_predictions(teacher, data.val, device, precision)
        args.teacher_top1 = top1
        print(f"teacher {args.model_t}: top-1 {top1:.2f}% (top-5 {top5:.2f}%) on the {args.dataset} test set")

    if current().is_main:  # the other ranks of a job write nothing
        files.create()
    logger = RunLogger(files, args, num_params)
    run_init_stage(args, objective, data, files, logger, device, precision, resume_path)
    trainer = Trainer(objective, data, sgd(objective.trainable_modules(), args), args, files, logger, device,
                      precision)
    if resume_path and resume_path != files.stage_checkpoint('init'):
        trainer.resume(resume_path)
    # The deployable network is written before 'finished', so that --resume auto redoes it after a kill.
    state = trainer.fit(closing=lambda state: export_deployable(objective, args, files, state))
    last = state['history'][-1]
    print(f"student {args.model_s}: last top-1 {last['val_top1']:.2f}% (top-5 {last['val_top5']:.2f}%), best "
          f"top-1 {state['best_acc']:.2f}% at epoch {state['best_epoch']}; saved in {files.folder}")
    return state


def export_deployable(objective, args, files, state):
    """Methods whose deployed network is more than the student (SimKD) also write <s>_deploy.pth."""
    exported = objective.method.deployable(objective.model, objective.teacher)
    if exported is None:
        return
    module, meta = exported
    path = os.path.join(files.folder, f'{args.model_s}_deploy.pth')
    atomic_save(dict(model=module.state_dict(), deploy=meta, epoch=state['epoch'],
                     accuracy=state['history'][-1]['val_top1']), path)
    print(f"deployable network (last epoch) saved to {path}; evaluate it with tools/eval.py --path {path}")


def run_init_stage(args, objective, data, files, logger, device, precision, resume_path):
    """AB, FT and FSP first train some modules alone for --init_epochs (RepDistiller's helper/pretrain.py)."""
    method = objective.method
    modules = method.init_modules(objective.model)
    if not modules or args.init_epochs == 0:
        return
    if resume_path and resume_path != files.stage_checkpoint('init'):
        return  # the main stage had begun: the init stage is in its checkpoint already
    init = InitStageObjective(objective.model, objective.teacher, method)
    init_lr = method.init_learning_rate(args)
    trainer = Trainer(init, data, sgd(modules, args), args, files, logger, device, precision, stage='init',
                      epochs=args.init_epochs, lr_at=lambda epoch: init_lr)
    if resume_path:
        trainer.resume(resume_path)
    trainer.fit()


if __name__ == '__main__':
    run_cli(main)

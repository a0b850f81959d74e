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
import argparse
import os
import sys

from distiller_zoo import DISTILLERS
from distiller_zoo.base import add_loss_weights, add_method_arguments, method_name, probe_networks, settle
from engine.args import parser_for, resolve_common_args
from engine.launch import launch
from engine.loop import Trainer, evaluate_predictions
from engine.objective import DistillObjective, InitStageObjective
from engine.setup import (count_parameters, devices_and_data, resolved_defaults, run_provenance, seed_for_run, sgd,
                          synchronise_batchnorm)
from helper.checkpoint import atomic_save, check_file
from helper.console import logged
from helper.distributed import current
from helper.errors import KDZooError, run_cli
from helper.logger import RunLogger
from helper.provenance import INFRA, state_dict_sha256
from helper.run_files import RunFiles, student_run_name
from helper.runtime import memory_format
from models.registry import build_model, check_model_name, model_name_from_path
from models.weights import load_weights


def parse_args(argv=None):
    """The run's arguments, plus ``method_flags`` ({dest: short name} of the flags the method reads) and
    ``run_defaults`` (what the same teacher, student, method and data set resolve to with no other flag)."""
    parser = build_parser()
    args = _parse(parser, argv)
    args.method_flags = method_flags(DISTILLERS[args.distill], parser)
    identity = ['--path_t', args.path_t, '--model_t', args.model_t, '--model_s', args.model_s,
                '--distill', args.distill, '--dataset', args.dataset]
    args.run_defaults = resolved_defaults(lambda argv: _parse(parser, argv), identity)
    return args


def method_flags(method_cls, parser):
    """{dest: name in folder names and report labels} of the flags ``method_cls`` reads (its
    ``flag_dests``), without I/O flags and hidden ones; the name is the one-letter spelling where there is
    one (``-f`` -> ``f``), else the destination."""
    actions = {action.dest: action for action in parser._actions}
    names = {}
    for dest in method_cls.flag_dests(parser):
        action = actions[dest]
        if dest in INFRA or action.help == argparse.SUPPRESS:
            continue
        short = [option for option in action.option_strings if not option.startswith('--')]
        names[dest] = short[0].lstrip('-') if short else dest
    return names


def non_default_flags(args):
    """[(name, value)] of the method's flags whose value differs from its default for this pair."""
    defaults = args.run_defaults
    return [(name, getattr(args, dest)) for dest, name in args.method_flags.items()
            if dest in defaults and _differs(getattr(args, dest), defaults[dest])]


def _differs(value, default):
    if isinstance(value, (list, tuple)) and isinstance(default, (list, tuple)):
        return list(value) != list(default)
    return value != default


def build_parser():
    parser = parser_for(__doc__.splitlines()[0])
    net = parser.add_argument_group('teacher and student')
    net.add_argument('--path_t', '--path-t', dest='path_t', default=None, help='teacher checkpoint')
    net.add_argument('--model_t', default=None, help='teacher architecture (default: parsed from --path_t)')
    net.add_argument('--model_s', default='resnet8', help='student architecture')
    net.add_argument('--skip-validation', '--skip_validation', dest='skip_validation', action='store_true',
                     help='do not evaluate the teacher before training')

    method = parser.add_argument_group('distillation')
    method.add_argument('--distill', default='kd', help=f"method: {', '.join(sorted(DISTILLERS))}")
    add_loss_weights(method)
    return add_method_arguments(parser)


def _parse(parser, argv):
    argv = sys.argv[1:] if argv is None else list(argv)
    chosen = method_name(parser.parse_known_args(argv)[0].distill)
    argv = DISTILLERS[chosen].rewrite_argv(argv)
    args = parser.parse_args(argv)
    args.distill = chosen
    if args.path_t is None:
        raise KDZooError("no teacher given; pass --path_t <teacher checkpoint>")
    if os.path.isdir(args.path_t):  # said before the architecture is parsed from the path, which a folder is not
        check_file(args.path_t, '--path_t')
    args.model_s = check_model_name(args.model_s, args.dataset, '--model_s')
    args.model_t = args.model_t or model_name_from_path(args.path_t)
    if args.model_t is None:
        raise KDZooError(f"cannot tell the teacher's architecture from '{args.path_t}'; pass --model_t")
    args.model_t = check_model_name(args.model_t, args.dataset, '--model_t')
    args.weights_note = settle(DISTILLERS[args.distill], args)
    return resolve_common_args(args, args.model_s)


def load_teacher(args, num_classes, device, fmt):
    """The frozen teacher; ``args.teacher_sha256`` is the hash of the weights loaded (helper/provenance.py),
    which tells two teacher files of one architecture apart in metrics.json and tools/report.py."""
    teacher = build_model(args.model_t, num_classes, args.dataset, '--model_t')
    load_weights(teacher, args.path_t, args.model_t, flag='--path_t')
    args.teacher_sha256 = state_dict_sha256(teacher.state_dict())
    return teacher.to(device, memory_format=fmt).eval().requires_grad_(False)


def build_objective(args, data, device, precision, method_cls=None):
    """Teacher (loaded, frozen), student and the method's modules, wired into one objective."""
    method_cls = method_cls or DISTILLERS[args.distill]
    fmt = memory_format(precision)
    teacher = load_teacher(args, data.num_classes, device, fmt)
    student = build_model(args.model_s, data.num_classes, args.dataset, '--model_s').to(device, memory_format=fmt)
    probe_s, probe_t = probe_networks(student, teacher, method_cls.preact, 224 if args.dataset == 'imagenet' else 32,
                                      fmt)
    method = method_cls(args, student, teacher, probe_s, probe_t, data).to(device)
    return DistillObjective(student, teacher, method)


def main(argv=None):
    """Parse, then train here or in one process per GPU (--multiprocessing-distributed, torchrun)."""
    return launch(parse_args(argv), train)


def run_name(args):
    """The run folder's name: the SimKD repo's, plus the method flags that differ from their defaults."""
    return student_run_name(args.model_s, args.model_t, args.dataset, args.distill, args.gamma, args.alpha,
                            args.beta, args.trial, non_default_flags(args))


@logged
def train(args):
    """One process's run: all of it in a single process, or one rank of a multi-process job."""
    method_cls = DISTILLERS[args.distill]
    check_file(args.path_t, '--path_t')  # a missing teacher, or a folder, is said before any data is read
    files = RunFiles(args.save_root, 'students', run_name(args), args.model_s)
    files.refuse_overwrite(args.resume, args.overwrite)
    resume_path = files.resume_path(args.resume, args.epochs) if args.resume else None
    seed_for_run(args, resume_path)
    device, precision, data = devices_and_data(args, **method_cls.data_options(args))
    objective = build_objective(args, data, device, precision, method_cls)
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
    teacher_file = dict(path=os.path.abspath(args.path_t), model=args.model_t, sha256=args.teacher_sha256)
    logger = RunLogger(files, args, num_params, provenance=run_provenance(device, precision, data, teacher_file))
    run_init_stage(args, objective, data, files, logger, device, precision, resume_path)
    trainer = Trainer(objective, data, sgd(objective.trainable_modules(), args), args, files, logger, device,
                      precision)
    if resume_path and resume_path != files.stage_checkpoint('init'):
        trainer.resume(resume_path)
    # The deployable network is written before 'finished', so that --resume auto redoes it after a kill.
    state = trainer.fit(closing=lambda state: export_deployable(objective, args, files, state, logger.provenance))
    last = state['history'][-1]
    print(f"student {args.model_s}: last top-1 {last['val_top1']:.2f}% (top-5 {last['val_top5']:.2f}%), best "
          f"top-1 {state['best_acc']:.2f}% at epoch {state['best_epoch']}; saved in {files.folder}")
    return state


def export_deployable(objective, args, files, state, provenance=None):
    """Methods whose deployed network is more than the student (SimKD) also write <s>_deploy.pth."""
    exported = objective.method.deployable(objective.model, objective.teacher)
    if exported is None:
        return
    module, meta = exported
    path = os.path.join(files.folder, f'{args.model_s}_deploy.pth')
    atomic_save(dict(model=module.state_dict(), deploy=meta, epoch=state['epoch'],
                     accuracy=state['history'][-1]['val_top1'], provenance=provenance), path)
    print(f"deployable network (last epoch) saved to {path}; evaluate it with tools/eval.py --path {path}")


def run_init_stage(args, objective, data, files, logger, device, precision, resume_path):
    """AB, FT and FSP first train some modules alone for --init_epochs (RepDistiller's helper/pretrain.py);
    SSKD trains its teacher's self-supervision head on the frozen teacher."""
    method = objective.method
    modules = method.init_modules(objective.model)
    if not modules or args.init_epochs == 0:
        return
    if resume_path and resume_path != files.stage_checkpoint('init'):
        return  # the main stage had begun: the init stage is in its checkpoint already
    init = InitStageObjective(objective.model, objective.teacher, method)
    trainer = Trainer(init, data, sgd(modules, args), args, files, logger, device, precision, stage='init',
                      epochs=args.init_epochs, lr_at=lambda epoch: method.init_lr_at(args, epoch))
    if resume_path:
        trainer.resume(resume_path)
    trainer.fit()


if __name__ == '__main__':
    run_cli(main)

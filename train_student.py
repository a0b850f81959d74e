"""Distil a student from a trained teacher with any method of distiller_zoo/.

    python train_student.py --path_t ./save/teachers/models/resnet32x4_vanilla/resnet32x4_best.pth \\
        --distill kd --model_s resnet8x4 -r 0.1 -a 0.9 -b 0 --trial 1
    python train_student.py --path-t ./save/teachers/models/ResNet50_vanilla/ResNet50_best.pth --dataset imagenet \\
        --model_s ResNet18 --distill simkd -c 0 -d 0 -b 1 --gpu_id 0,1,2,3 --multiprocessing-distributed \\
        --dist-url tcp://127.0.0.1:23444 --dali gpu                         # the SimKD repo's ImageNet command
    python train_student.py --path_t ./save/teachers/models/resnet32x4_vanilla/resnet32x4_best.pth \\
        --model_s resnet8x4 --distill kd,crd,dkd:b=8,simkd:f=4 --trial 0    # a pack: one teacher pass a batch

The loss is gamma * CE + alpha * KD + beta * (the method's loss), RepDistiller's -r/-a/-b (the SimKD
repo's -c/-d/-b). Weights not given default to those of the script behind the method's published
numbers; the run prints the weights it uses.
"""
import os
import sys

from distiller_zoo import DISTILLERS
from distiller_zoo.flags import add_loss_weights, add_method_arguments, settle
from helper.recipe import add_recipe_scaling_argument, schedule_note, settle_schedule
from distiller_zoo.registry import method_name
from engine.args import parser_for, resolve_common_args
from engine.launch import launch
from engine.pack import train_pack
from engine.pack_args import is_pack, parse_pack
from engine.run import RunSpec, run
from engine.setup import resolved_defaults
from engine.student import (add_dot_arguments, build_objective, examine_teacher, export_deployable,  # noqa: F401
                            init_stage_trainer, load_teacher, method_flags, non_default_flags, run_name,
                            settle_dot, student_files, teacher_file, training_summary)
from helper.checkpoint import check_file
from helper.console import logged
from helper.errors import KDZooError, run_cli
from models.registry import check_model_name, model_name_from_path
from online import ONLINE_METHODS


def build_parser():
    parser = parser_for(__doc__.splitlines()[0])
    net = parser.add_argument_group('teacher and student')
    net.add_argument('--path_t', '--path-t', dest='path_t', default=None, help='teacher checkpoint')
    net.add_argument('--model_t', default=None, help='teacher architecture (default: parsed from --path_t)')
    net.add_argument('--model_s', default='resnet8', help='student architecture; a comma-separated list '
                     'pairs with --distill\'s list (a pack)')
    net.add_argument('--skip-validation', '--skip_validation', dest='skip_validation', action='store_true',
                     help='do not evaluate the teacher before training')

    method = parser.add_argument_group('distillation')
    method.add_argument('--distill', default='kd', help=f"method: {', '.join(sorted(DISTILLERS))}; a "
                        f"comma-separated list of method[:flag=value...] trains a pack of students, e.g. "
                        f"kd,crd,dkd:b=8,simkd:f=4 (docs/methods.md, 'Packed runs')")
    add_loss_weights(method)
    add_recipe_scaling_argument(method)
    add_dot_arguments(parser)
    return add_method_arguments(parser)


def parse_args(argv=None):
    """A single run's settled arguments; for a pack (a list in --distill or --model_s), a namespace of the
    shared settings with ``members``, each member's arguments exactly as its single run would parse them."""
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    first = parser.parse_known_args(argv)[0]
    refuse_online_methods(first.distill)
    if is_pack(first.distill, first.model_s):
        return parse_pack(argv, first.distill, first.model_s, parser, parse_single)
    return parse_single(argv, parser)


def refuse_online_methods(distill):
    """One line for a --distill name (or pack member) that is a teacher-free method of train_online_mcl.py."""
    for part in distill.split(','):
        name = part.split(':')[0].strip()
        found = ONLINE_METHODS.get(name.lower())
        if found is not None and getattr(found, 'command', None) and name.lower() not in DISTILLERS:
            raise KDZooError(f"{found.name} trains one network without a teacher and lives in the online wing: "
                             f"{found.command}")


def parse_single(argv, parser=None):
    """One run's arguments, plus ``method_flags`` ({dest: short name} of the flags the method reads) and
    ``run_defaults`` (what the same teacher, student, method and data set resolve to with no other flag)."""
    parser = parser or build_parser()
    args = _parse(parser, argv)
    args.method_flags = method_flags(DISTILLERS[args.distill], parser)
    if args.add != 'kd':  # --add and the added method's flags name the run's folder too
        args.method_flags.update(add='add', **method_flags(DISTILLERS[args.add], parser))
    if args.dot:  # DOT's flags name the run's folder, so kd and kd:dot train side by side
        args.method_flags.update(dot='dot', dot_delta='dot_delta')
    identity = ['--path_t', args.path_t, '--model_t', args.model_t, '--model_s', args.model_s,
                '--distill', args.distill, '--dataset', args.dataset]
    args.run_defaults = resolved_defaults(lambda argv: _parse(parser, argv), identity)
    return args


def _parse(parser, argv):
    argv = list(argv)
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
    args = resolve_common_args(args, args.model_s)
    settle_dot(args, DISTILLERS[args.distill])
    settle_schedule(args)  # the pinned epoch constants of the method, scaled to --epochs
    return args


def main(argv=None):
    """Parse, then train here or in one process per GPU (--multiprocessing-distributed, torchrun)."""
    return launch(parse_args(argv), train)


@logged
def train(args):
    """One process's run: all of it in a single process, or one rank of a multi-process job."""
    if getattr(args, 'members', None):
        return train_pack(args)
    method_cls = DISTILLERS[args.distill]
    check_file(args.path_t, '--path_t')  # a missing teacher, or a folder, is said before any data is read
    return run(args, RunSpec(
        student_files(args), build, announce, lambda ctx, state: training_summary(ctx.files, state),
        data_options=method_cls.data_options(args), examine=examine,
        teacher_file=lambda record: teacher_file(args.path_t, args.model_t, record), stages=init_stage,
        # The deployable network is written before 'finished', so that --resume auto redoes it after a kill.
        closing=lambda ctx, state: export_deployable(ctx.objective, ctx.files, state, ctx.logger.provenance)))


def build(ctx):
    return build_objective(ctx.args, ctx.data, ctx.device, ctx.precision, DISTILLERS[ctx.args.distill])


def announce(ctx):
    args = ctx.args
    return (f"student {args.model_s} ({ctx.num_params / 1e6:.2f}M parameters) <- teacher {args.model_t} by "
            f"{args.distill}; {args.weights_note}; {args.dataset}; {ctx.device.type}, {ctx.precision}; "
            f"{args.lr_note}{'; ' + schedule_note(args) if schedule_note(args) else ''}")


def examine(ctx):
    args = ctx.args
    return examine_teacher(ctx.objective.teacher, ctx.data, ctx.device, ctx.precision, args.model_t, args.dataset,
                           validate=not args.skip_validation)


def init_stage(ctx):
    """AB, FT and FSP's first stage, SSKD's self-supervision head (engine/student.py)."""
    trainer = init_stage_trainer(ctx)
    return [trainer] if trainer is not None else []


if __name__ == '__main__':
    run_cli(main)

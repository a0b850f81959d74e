"""The pieces of one student run that train_student.py and a pack of students (engine/pack.py) share:
the run's folder name, files, the teacher, the objective, the init stage of two-stage methods, the
deployable file."""
import argparse
import os

from distiller_zoo import DISTILLERS
from distiller_zoo.add import attach_added
from distiller_zoo.teacher import probe_networks
from distiller_zoo.two_stage import TwoStage
from engine.loop import Trainer, evaluate_predictions
from engine.objective import DistillObjective, InitStageObjective
from engine.setup import sgd
from helper.checkpoint import atomic_save
from helper.errors import KDZooError
from helper.provenance import INFRA, state_dict_sha256
from helper.run_files import RunFiles, student_run_name
from helper.runtime import memory_format
from models.registry import build_model
from models.weights import load_weights


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


def run_name(args):
    """The run folder's name: the SimKD repo's, plus the method flags that differ from their defaults."""
    return student_run_name(args.model_s, args.model_t, args.dataset, args.distill, args.gamma, args.alpha,
                            args.beta, args.trial, non_default_flags(args))


def student_files(args):
    """The run's folder (save/students/models/S:<s>_T:<t>_..._<trial>) and its files."""
    return RunFiles(args.save_root, 'students', run_name(args), args.model_s)


def load_teacher(args, num_classes, device, fmt):
    """The frozen teacher (--model_t with the weights of --path_t)."""
    teacher = build_model(args.model_t, num_classes, args.dataset, '--model_t')
    load_weights(teacher, args.path_t, args.model_t, flag='--path_t')
    return teacher.to(device, memory_format=fmt).eval().requires_grad_(False)


def examine_teacher(teacher, data, device, precision, name, dataset, validate=True):
    """The RunRecord fields a student run finds about its teacher: the hash of its weights
    (helper/provenance.py), which tells two teacher files of one architecture apart in metrics.json and
    tools/report.py, and (``validate``) its top-1 on the test set, printed."""
    found = dict(teacher_sha256=state_dict_sha256(teacher.state_dict()))
    if validate:
        top1, top5, _ = evaluate_predictions(teacher, data.val, device, precision)
        found['teacher_top1'] = top1
        print(f"teacher {name}: top-1 {top1:.2f}% (top-5 {top5:.2f}%) on the {dataset} test set")
    return found


def teacher_file(path_t, model_t, record):
    """The teacher file's record in the run's provenance (``record``: the run's RunRecord)."""
    return dict(path=os.path.abspath(path_t), model=model_t, sha256=record.teacher_sha256)


def build_objective(args, data, device, precision, method_cls=None, teacher=None, teacher_source=None):
    """Teacher (loaded, frozen; or the one given, which a pack shares), student and the method's modules,
    wired into one objective. The global random state is drawn in the order of a single run: teacher,
    student, probe, method."""
    method_cls = method_cls or DISTILLERS[args.distill]
    fmt = memory_format(precision)
    teacher = teacher if teacher is not None else load_teacher(args, data.num_classes, device, fmt)
    student = build_model(args.model_s, data.num_classes, args.dataset, '--model_s').to(device, memory_format=fmt)
    probe_s, probe_t = probe_networks(student, teacher, method_cls.preact, 224 if args.dataset == 'imagenet' else 32,
                                      fmt)
    method = method_cls(args, student, teacher, probe_s, probe_t, data).to(device)
    attach_added(method, args, student, teacher, probe_s, probe_t, data, device)  # --add's loss, if any
    return DistillObjective(student, teacher, method, teacher_source)


def init_stage_trainer(ctx):
    """AB, FT and FSP first train some modules alone for --init_epochs (RepDistiller's helper/pretrain.py);
    SSKD trains its teacher's self-supervision head on the frozen teacher: the Trainer of that stage of the
    run ``ctx`` (engine/run.RunContext; resumed where its resume path is the stage's checkpoint), or None
    when the method has none or the main stage had begun."""
    args, objective, resume_path = ctx.args, ctx.objective, ctx.resume_path
    method = objective.method
    modules = method.init_modules(objective.model)
    if not modules or args.init_epochs == 0:
        return None
    if resume_path and resume_path != ctx.files.stage_checkpoint('init'):
        return None  # the main stage had begun: the init stage is in its checkpoint already
    init = InitStageObjective(objective.model, objective.teacher, method, objective.teacher_source)
    trainer = Trainer(init, ctx.data, sgd(modules, args), args, ctx.files, ctx.logger, ctx.device, ctx.precision,
                      stage='init', epochs=args.init_epochs, lr_at=lambda epoch: method.init_lr_at(args, epoch),
                      record=ctx.record)
    if resume_path:
        trainer.resume(resume_path)
    return trainer


def export_deployable(objective, files, state, provenance=None):
    """Methods whose deployed network is more than the student (SimKD) also write <s>_deploy.pth."""
    exported = objective.method.deployable(objective.model, objective.teacher)
    if exported is None:
        return
    module, meta = exported
    path = os.path.join(files.folder, f'{files.model_name}_deploy.pth')  # the student's name
    atomic_save(dict(model=module.state_dict(), deploy=meta, epoch=state['epoch'],
                     accuracy=state['history'][-1]['val_top1'], provenance=provenance), path)
    print(f"deployable network (last epoch) saved to {path}; evaluate it with tools/eval.py --path {path}")


def training_summary(files, state):
    last = state['history'][-1]
    return (f"student {files.model_name}: last top-1 {last['val_top1']:.2f}% (top-5 {last['val_top5']:.2f}%), best "
            f"top-1 {state['best_acc']:.2f}% at epoch {state['best_epoch']}; saved in {files.folder}")


# ---- --dot: DOT's split-momentum SGD (helper/dot.py) -------------------------------------------------------
def add_dot_arguments(parser):
    """--dot and --dot_delta, train_student.py's optimiser flags for DOT."""
    group = parser.add_argument_group('DOT, the Distillation-Oriented Trainer (Zhao et al., ICCV 2023)')
    group.add_argument('--dot', action='store_true',
                       help='train with DOT: separate momentum for the CE gradient (--momentum minus --dot_delta) '
                            'and the gradient of the distillation terms (--momentum plus --dot_delta), two '
                            'backward passes a step (mdistiller engine/dot.py); one-stage methods with a '
                            'distillation term')
    group.add_argument('--dot_delta', type=float, default=None,
                       help="DOT's momentum split, mdistiller's SOLVER.DOT.DELTA: 0.075 (its CIFAR-100 and "
                            "Tiny-ImageNet configs), 0.09 on ImageNet (configs/imagenet/*/dot.yaml)")
    return parser


def settle_dot(args, method_cls):
    """Fill --dot_delta and refuse, in one line, what DOT cannot train (called after the weights and the
    recipe are settled)."""
    given = args.dot_delta is not None
    if not given:
        args.dot_delta = 0.09 if args.dataset == 'imagenet' else 0.075
    if not args.dot:
        if given:
            raise KDZooError("--dot_delta sets DOT's momentum split; add --dot to train with DOT")
        return
    if issubclass(method_cls, TwoStage):
        raise KDZooError(f"--dot cannot train {method_cls.name}, a two-stage method (its init stage has no "
                         f"distillation gradient to separate); drop --dot")
    if not args.alpha and not args.beta:
        raise KDZooError(f"--dot separates the distillation gradient from the CE one, and with -a 0 and -b 0 "
                         f"{method_cls.name} has none; give -a or -b, or drop --dot")
    if args.dot_delta < 0 or args.momentum - args.dot_delta < 0 or args.momentum + args.dot_delta >= 1:
        raise KDZooError(f"--dot_delta {args.dot_delta:g} with --momentum {args.momentum:g} gives momenta "
                         f"{args.momentum - args.dot_delta:g} (CE) and {args.momentum + args.dot_delta:g} (KD); "
                         f"both must lie in [0, 1) and the delta cannot be negative")
    if args.nesterov:
        raise KDZooError("--dot is plain (heavy-ball) momentum, as the official DOT; drop --nesterov")
    if args.precision == 'fp16':
        raise KDZooError("--dot runs two backward passes a step, which fp16 loss scaling does not cover; use "
                         "--precision bf16 or fp32")
    args.lr_note += (f"; DOT: momentum {args.momentum - args.dot_delta:g} on the CE gradient, "
                     f"{args.momentum + args.dot_delta:g} on the distillation one")

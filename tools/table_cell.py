"""Run one command of a table script so that running it again finishes what it started.

    python -m tools.table_cell train_student.py --path_t ... --model_s resnet8x4 --distill kd,crd --trial 0

The command's runs (a pack's members, or the one run) are looked up in save/ before anything starts:
every run already finished: nothing runs (one line says so, exit status 0); some run has a checkpoint: the
command runs with --resume auto (an interrupted run continues from its last checkpoint, a pack member that
finished is skipped and one without a checkpoint starts afresh); none has one: the command runs as written.
A command that already says --overwrite or --resume <path> runs as written; --resume auto in it (EXTRA="--resume
auto", also written into a pack's members) is left to this decision. The scripts (scripts/common.sh) run
every training command through this unless RESUME=0; a requeued Slurm task does too.
"""
import importlib
import os
import sys

from helper.errors import KDZooError, run_cli

SCRIPTS = ('train_teacher.py', 'train_student.py', 'train_online_mcl.py')


def run_files(module, args):
    """The RunFiles of every run the parsed command trains."""
    if module.__name__ == 'train_student':
        return [module.student_files(member) for member in getattr(args, 'members', None) or [args]]
    return [module.run_files(args)]


def run_state(files, epochs):
    """('missing' | 'partial' | 'done', why): a run without a checkpoint, one to resume, one with nothing
    left to train (finished, or already past --epochs: resuming it would be refused)."""
    if not any(os.path.isfile(path) for path in (files.last, files.stage_checkpoint('init'))):
        return 'missing', None
    try:
        files.resume_path('auto', epochs)
    except KDZooError as err:
        return 'done', str(err)
    return 'partial', None


def say(line):
    """Print ``line`` once per job: under torchrun every process decides, the first one speaks."""
    if os.environ.get('RANK', '0') == '0':
        print(line)


def plan(script, argv):
    """The module to run, and the argv to run it with (None: nothing left to do)."""
    if script not in SCRIPTS:
        raise KDZooError(f"tools.table_cell runs {', '.join(SCRIPTS)}, not '{script}'")
    module = importlib.import_module(script[:-len('.py')])
    args = module.parse_args(argv)
    if args.overwrite or args.resume not in (None, 'auto'):
        return module, argv
    argv = without_resume_auto(argv)  # EXTRA="--resume auto", the old way to continue a table: decided here
    members = getattr(args, 'members', None) or [args]
    states = [run_state(files, member.epochs) for files, member in zip(run_files(module, args), members)]
    if all(state == 'done' for state, _ in states):
        for files, (_, why) in zip(run_files(module, args), states):
            say(f"skipped {files.folder}: {why}")
        return module, None
    if any(state != 'missing' for state, _ in states):
        done = sum(state == 'done' for state, _ in states)
        say(f"resuming ({sum(state == 'partial' for state, _ in states)} interrupted, {done} finished, "
              f"{sum(state == 'missing' for state, _ in states)} not started of {len(states)} runs)")
        return module, list(argv) + ['--resume', 'auto']
    return module, argv


def without_resume_auto(argv):
    """``argv`` without ``--resume auto`` (``--resume=auto``, and ``resume=auto`` in --distill's members)."""
    kept = []
    for word in argv:
        if word == 'auto' and kept and kept[-1] == '--resume':
            kept.pop()
        elif word != '--resume=auto':
            kept.append(word.replace(':resume=auto', '') if kept and kept[-1] == '--distill' else word)
    return kept


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:
        raise KDZooError("usage: python -m tools.table_cell <train_*.py> [its flags...]")
    module, todo = plan(argv[0], argv[1:])
    if todo is None:
        return None
    return module.main(todo)


if __name__ == '__main__':
    run_cli(main)

"""What a run was: the settings that decide its result, and the code, machine and data it ran on.

Every run's metrics.json carries two records made here:

``run``
    ``kind`` (teacher, student, online, baseline), ``method``, ``column`` (what the run is a table cell of:
    data set, networks, the teacher file's weights hash), ``recipe`` (the optimisation settings shared by a
    whole table), ``settings`` (the method's own), ``defaults`` (what the script resolves for the same
    networks and data set when no other flag is given) and ``names`` (short flag names for labels).
    tools/report.py averages only runs whose column, recipe and settings are all equal; the trial and the
    seed are what separate trials. Everything a script records that is neither I/O nor one of those is
    kept in ``settings``, so a flag added later is never averaged over by accident.
``provenance``
    resolved precision and memory format, device name, torch/CUDA/cuDNN versions, the kdzoo git commit and
    whether its tree was dirty, the data set's fingerprint, the teacher's weights hash, the number of
    processes and the command line. Checkpoints carry the same record.
"""
import dataclasses
import hashlib
import os
import platform
import subprocess
import sys

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Flags that say where files go, how the job is spread or printed, or that merely echo other flags: none
# changes the numbers a run produces (trial and seed separate trials; --deterministic only makes a rerun
# repeat them), so runs differing only here are trials of one cell.
INFRA = frozenset({
    'trial', 'seed', 'deterministic', 'print_freq', 'save_freq', 'tb_freq', 'num_workers', 'data_folder',
    'save_root', 'gpu_id', 'dist_url', 'dist_backend', 'world_size', 'rank', 'nproc_per_node',
    'multiprocessing_distributed', 'resume', 'overwrite', 'skip_validation', 'path_t', 'centers',
    'precision',  # the flag ('auto'); the precision actually used is in the recipe
    'lr_note', 'weights_note', 'teacher_top1', 'teacher_sha256', 'run_defaults', 'method_flags',
    'nd_tuned_dkd_alpha',  # whether --dkd_alpha was typed; its effect is in dkd_alpha
    'lr_type', 'milestones',  # L-MCL spellings of lr_decay and lr_decay_epochs
    # the pinned epoch constants and the switch: their effect is recorded as the setting ``schedule``
    'no_recipe_scaling', 'recipe_pinned', 'recipe_schedule',
})

# Settings shared by every cell of a table: the data's batching, the schedule, the arithmetic.
RECIPE_KEYS = ('batch_size', 'epochs', 'learning_rate', 'lr_decay', 'lr_decay_epochs', 'lr_decay_rate',
               'weight_decay', 'momentum', 'nesterov', 'dali', 'sync_bn', 'precision', 'processes')

# What makes a run a cell of a table rather than a row: the data set and the networks.
COLUMN_KEYS = {'teacher': ('dataset', 'model'), 'student': ('dataset', 'model_t', 'model_s'),
               'online': ('dataset', 'arch', 'number_net', 'peers'), 'baseline': ('dataset',)}
# Read into ``method`` or the column instead.
OTHER_KEYS = {'student': ('distill',), 'online': ('baseline', 'no_meta', 'uskd'),
              'baseline': ('baseline', 'no_meta', 'uskd', 'arch', 'number_net', 'peers'), 'teacher': ()}


@dataclasses.dataclass(frozen=True)
class RunRecord:
    """What a run finds out while it runs, never typed by the user: the seed it drew (or recovered from the
    checkpoint it resumes), the hash of the teacher's weights and the teacher's top-1. Built once, after the
    teacher is validated; the parsed arguments are never written into."""
    seed: int
    teacher_sha256: str = None
    teacher_top1: float = None

    def written(self, args):
        """The run's arguments as its files record them (checkpoints' ``opt``, metrics.json's ``args``,
        log.txt, the ``run`` record): the parsed ones with the values found merged in, under the keys and
        in the order the files have always had (``seed`` where the parser put it, the teacher's after)."""
        values = dict(vars(args))
        values['seed'] = self.seed
        for key in ('teacher_sha256', 'teacher_top1'):
            if getattr(self, key) is not None:
                values[key] = getattr(self, key)
        return values


def run_kind(arguments):
    """'teacher', 'student', 'online' or 'baseline' from a run's recorded arguments."""
    if 'distill' in arguments:
        return 'student'
    if 'arch' in arguments:
        return 'baseline' if arguments.get('baseline') else 'online'
    return 'teacher'


def method_of(arguments, kind):
    if kind == 'student':
        return str(arguments.get('distill'))
    if kind == 'online':
        if arguments.get('uskd'):  # online/uskd.py: one network, no peers
            return 'uskd'
        return 'mcl' if arguments.get('no_meta') else 'lmcl'
    return 'baseline' if kind == 'baseline' else 'vanilla'


def describe_run(arguments, provenance=None):
    """The ``run`` record of a run from its arguments (a dict) and provenance (see the module text).

    ``arguments['run_defaults']`` (the script's resolution of the same networks and data set with no other flag)
    gives ``defaults``; ``arguments['method_flags']`` ({dest: short name}) limits a student's settings to its
    method's own flags and the loss weights. Runs recorded before either existed get every remaining
    argument as a setting and no defaults."""
    provenance = provenance or {}
    kind = run_kind(arguments)
    column = {key: _plain(arguments.get(key)) for key in COLUMN_KEYS[kind]}
    if kind == 'baseline':
        column['model'] = (arguments.get('peers') or [arguments.get('arch')])[0]
    if kind == 'student':
        column['teacher_sha256'] = (provenance.get('teacher') or {}).get('sha256')
    recipe = {key: _plain(arguments.get(key)) for key in RECIPE_KEYS if key in arguments}
    if provenance.get('precision'):
        recipe['precision'] = provenance['precision']
    recipe['processes'] = provenance.get('processes', 1)
    skip = INFRA | set(COLUMN_KEYS[kind]) | set(OTHER_KEYS[kind]) | set(RECIPE_KEYS)
    flags = arguments.get('method_flags')
    if kind == 'student' and isinstance(flags, dict):
        keys = ['gamma', 'alpha', 'beta', *flags]
    else:
        keys = [key for key in arguments if key not in skip]
    settings = {key: _plain(arguments.get(key)) for key in dict.fromkeys(keys) if key not in skip}
    if arguments.get('recipe_schedule'):  # a method's pinned epoch constants scaled to --epochs (its own row)
        settings['schedule'] = _plain(arguments['recipe_schedule'])
    defaults = {}
    resolved = arguments.get('run_defaults')
    if isinstance(resolved, dict):
        defaults = {key: _plain(resolved.get(key)) for key in (*recipe, *settings) if key in resolved}
        defaults['processes'] = 1
        if 'precision' in recipe and provenance.get('precision_default'):
            defaults['precision'] = provenance['precision_default']
    names = dict(flags) if isinstance(flags, dict) else {}
    names.update({'gamma': 'r', 'alpha': 'a', 'beta': 'b'} if kind == 'student' else {})
    return dict(kind=kind, method=method_of(arguments, kind), column=column, recipe=recipe, settings=settings,
                defaults=defaults, names={k: v for k, v in names.items() if k in settings})


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


# ---- provenance -------------------------------------------------------------------------------------

def state_dict_sha256(state):
    """sha256 over a state dict's names, dtypes, shapes and raw bytes, in name order: the same weights give
    the same hash whatever file, container, device or memory layout they came in (prefixes stripped, keys
    adapted). ND's class-centre files record the same hash of their teacher (``teacher_fingerprint``)."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name]
        if not torch.is_tensor(tensor):
            continue
        tensor = tensor.detach().to('cpu').contiguous()
        digest.update(f'{name}:{tensor.dtype}:{tuple(tensor.shape)};'.encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


_GIT = {}


def git_state(root=REPO):
    """{'commit', 'dirty'} of the kdzoo checkout, or None outside a git checkout or without git. Dirty means
    tracked files differ from the commit (untracked files, such as save/ and data/, do not count)."""
    if root in _GIT:
        return _GIT[root]
    state = None
    try:
        head = subprocess.run(['git', '-C', root, 'rev-parse', 'HEAD'], capture_output=True, text=True,
                              timeout=20)
        if head.returncode == 0 and head.stdout.strip():
            status = subprocess.run(['git', '-C', root, 'status', '--porcelain', '--untracked-files=no'],
                                    capture_output=True, text=True, timeout=20)
            dirty = bool(status.stdout.strip()) if status.returncode == 0 else None
            state = dict(commit=head.stdout.strip(), dirty=dirty)
    except (OSError, subprocess.SubprocessError, ValueError):
        state = None
    _GIT[root] = state
    return state


def device_name(device):
    if device.type == 'cuda':
        return torch.cuda.get_device_name(device)
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.lower().startswith('model name'):
                    return f"CPU: {line.split(':', 1)[1].strip()}"
    except OSError:
        pass
    return f"CPU: {platform.processor() or platform.machine() or 'unknown'}"


def provenance(device, precision, precision_default, memory_format, data=None, teacher=None, processes=1):
    """The ``provenance`` record: ``teacher`` is {'path', 'model', 'sha256'} for students."""
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    # Plain str/int/None only: checkpoints carry this record and must load with torch.load(weights_only=True)
    # (torch.__version__ is a TorchVersion, which that refuses).
    record = dict(
        precision=precision, precision_default=precision_default,
        memory_format='channels_last' if memory_format == torch.channels_last else 'contiguous',
        device=device_name(device), processes=processes,
        versions=dict(python=platform.python_version(), torch=str(torch.__version__), cuda=torch.version.cuda,
                      cudnn=cudnn),
        git=git_state(), data=getattr(data, 'fingerprint', None), command=[os.path.basename(sys.argv[0]),
                                                                           *sys.argv[1:]])
    if teacher is not None:
        record['teacher'] = teacher
    return record

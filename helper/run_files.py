"""The save/ layout: run folders and file names, as RepDistiller and the SimKD repo lay them out.

    save/teachers/models/<model>_vanilla/              <model>_best.pth, ckpt_epoch_<N>.pth, <model>_last.pth,
                                                       metrics.json, log.txt
    save/teachers/tensorboard/<model>_vanilla/
    save/students/models/S:<s>_T:<t>_<dataset>_<distill>_r:<r>_a:<a>_b:<b>[_<flag>:<value>...]_<trial>/
                                                       (same files)
    save/students/tensorboard/<same name>/

A teacher on CIFAR-100 with trial 0 uses the short folder the seeds' commands point --path_t at
(``resnet32x4_vanilla``); other data sets and trials add ``_<dataset>_trial_<trial>``. A student folder is
the SimKD repo's name while the method's own flags keep their defaults; each flag that differs is added
before the trial (``..._b:1_f:8_0``), so runs that differ in a method flag never share a folder.
"""
import hashlib
import json
import os
import sys

from . import console
from .checkpoint import atomic_write, extract_state_dict, format_bytes, load_checkpoint, remove_stale_temporaries
from .errors import KDZooError

# ':' cannot appear in Windows file names; the SimKD repo writes '~' there instead.
SEP = '~' if sys.platform.startswith('win') else ':'


def teacher_run_name(model, dataset, trial):
    if dataset == 'cifar100' and str(trial) == '0':
        return f'{model}_vanilla'
    return f'{model}_vanilla_{dataset}_trial_{trial}'


# Longer flag parts are replaced by a hash of themselves: file names stop at 255 bytes.
MAX_FLAGS_CHARS = 120


def _fmt(weight):
    if isinstance(weight, bool):
        return str(int(weight))
    if isinstance(weight, float):
        return f'{weight:g}'
    if isinstance(weight, (list, tuple)):
        return ','.join(_fmt(w) for w in weight)
    return str(weight).replace('/', '-').replace(os.sep, '-')


def flag_parts(flags):
    """``[(name, value), ...]`` -> ``_name:value...``; a switch that is on is its name alone."""
    parts = ''.join(f'_{name}' if value is True else f'_{name}{SEP}{_fmt(value)}' for name, value in flags)
    if len(parts) > MAX_FLAGS_CHARS:
        parts = f'_flags{SEP}' + hashlib.sha256(parts.encode()).hexdigest()[:12]
    return parts


def student_run_name(student, teacher, dataset, distill, gamma, alpha, beta, trial, flags=()):
    """The SimKD repo's folder name, plus ``flags`` (the method flags that differ from its defaults)."""
    return (f'S{SEP}{student}_T{SEP}{teacher}_{dataset}_{distill}_r{SEP}{_fmt(gamma)}_a{SEP}{_fmt(alpha)}'
            f'_b{SEP}{_fmt(beta)}{flag_parts(flags)}_{trial}')


def refuse_finished(path, epochs):
    """One line if the checkpoint at ``path`` ends a run of ``epochs`` epochs that finished: nothing to resume."""
    checkpoint = load_checkpoint(path, '--resume checkpoint')
    saved = checkpoint.get('kdzoo') if isinstance(checkpoint, dict) else None
    if not isinstance(saved, dict) or 'epoch' not in saved:
        extract_state_dict(checkpoint, path)  # a foreign checkpoint's weights, or one line before any folder
        return  # not a resume checkpoint: Trainer.resume continues from its weights
    stage = saved.get('stage') or ('init' if path.endswith('_init.pth') else 'main')
    if stage != 'main' or saved['epoch'] < epochs:
        return
    if saved['epoch'] > epochs:
        raise KDZooError(f"the run in '{path}' has trained {saved['epoch']} epochs, more than --epochs {epochs}; "
                         f"nothing to resume (pass --epochs {saved['epoch']} or more)")
    try:
        with open(os.path.join(os.path.dirname(path), 'metrics.json')) as f:
            metrics = json.load(f)
        finished = metrics['status'] == 'finished' and metrics['epochs_done'] == saved['epoch']
    except (OSError, ValueError, KeyError, TypeError):
        finished = False  # missing or unreadable: the closing writes are redone, and rewrite it
    if finished:
        raise KDZooError(f"the run in '{path}' already finished {saved['epoch']} of {epochs} epochs; nothing "
                         f"to resume (pass a larger --epochs to train on)")


class RunFiles:
    def __init__(self, save_root, kind, run_name, model_name):
        self.kind = kind
        self.folder = os.path.join(save_root, kind, 'models', run_name)
        self.tensorboard = os.path.join(save_root, kind, 'tensorboard', run_name)
        self.model_name = model_name
        self.best = os.path.join(self.folder, f'{model_name}_best.pth')
        self.last = os.path.join(self.folder, f'{model_name}_last.pth')
        self.metrics = os.path.join(self.folder, 'metrics.json')
        self.log = os.path.join(self.folder, console.LOG_NAME)
        self.fresh_log = False  # --overwrite: the old run's log goes too

    def stage_checkpoint(self, stage):
        """Resume file of a preliminary stage (the init stage of AB, FT, FSP)."""
        return os.path.join(self.folder, f'{self.model_name}_{stage}.pth')

    def periodic(self, epoch):
        return os.path.join(self.folder, f'ckpt_epoch_{epoch}.pth')

    def resume_path(self, resume, epochs):
        """The checkpoint --resume names ('auto': this run's last checkpoint, else its init-stage one).

        A run that finished all ``epochs`` is refused here, before any data is read: its ``metrics.json``
        says ``finished``. One whose last checkpoint holds every epoch but which stopped before its closing
        writes (metrics.json still ``running``, ``interrupted`` or absent) is resumable: it is finished then.
        """
        path = resume
        if resume == 'auto':
            path = next((p for p in (self.last, self.stage_checkpoint('init')) if os.path.isfile(p)), None)
            if path is None:
                raise KDZooError(f"--resume auto found no checkpoint at '{self.last}'; start the run without "
                                 f"--resume, or pass the checkpoint path")
        refuse_finished(path, epochs)
        return path

    def refuse_overwrite(self, resume, overwrite):
        """A new run never writes over an existing one unless asked to."""
        self.fresh_log = bool(overwrite and not resume)
        if not resume and not overwrite and os.path.isfile(self.last):
            raise KDZooError(f"'{self.folder}' already holds a run; continue it with --resume auto, start "
                             f"afresh there with --overwrite, or pick another --trial")

    def create(self):
        for folder in (self.folder, self.tensorboard):
            try:
                os.makedirs(folder, exist_ok=True)
                probe = os.path.join(folder, '.write_test')
                with open(probe, 'w'):
                    pass
                os.remove(probe)
            except OSError as err:
                raise KDZooError(f"cannot write to '{folder}' ({err.strerror}); pass --save_root with a "
                                 f"writable folder") from None
        console.attach(self.log, fresh=self.fresh_log)
        # Temporary files of writes that a kill cut short (the peers' sub-folders of online runs too).
        count, size = remove_stale_temporaries(self.folder, recursive=True)
        if count:
            print(f"removed {count} temporary file(s) ({format_bytes(size)}) left in '{self.folder}' by "
                  f"interrupted writes")

    def write_metrics(self, summary):
        atomic_write(self.metrics, lambda f: json.dump(summary, f, indent=2))


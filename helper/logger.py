"""Run output: one console line per epoch, a line every --print_freq steps, TensorBoard scalars, the
metrics JSON (with the run's settings and provenance, helper/provenance.py) and log.txt (helper/console.py)."""
import contextlib
import json
import sys
import threading

from . import console, distributed
from .checkpoint import disk_full_cause, disk_full_error
from .provenance import describe_run
from .run_files import RunFiles


class RunLogger:
    def __init__(self, files: RunFiles, args, num_params, tensorboard=True, provenance=None, label=None,
                 record=None):
        """``record`` (helper/provenance.RunRecord): the values the run found, merged into the arguments
        that metrics.json and log.txt record."""
        self.files = files
        self.prefix = f'[{label}] ' if label else ''  # which student of a pack (engine/pack.py) a line is about
        self.args = args
        self.num_params = num_params
        self.tensorboard = tensorboard
        self.writer = None  # opened at the first epoch's end, so a run refused at start writes nothing
        self.provenance = provenance
        self.arguments = record.written(args) if record is not None else dict(vars(args))
        self.run = describe_run(self.arguments, provenance)
        self.weights = None  # sha256 of the saved weights, once the run has finished
        if distributed.current().is_main:
            arguments = {k: v for k, v in self.arguments.items() if _is_plain(v)}
            console.log_only(f"arguments: {json.dumps(arguments, default=str)}")
            console.log_only(f"run: {json.dumps(self.run, default=str)}")
            console.log_only(f"provenance: {json.dumps(provenance, default=str)}")

    def step(self, line, progress):
        """A --print_freq line: printed where stdout is not a terminal (a batch job's file), logged always;
        on a terminal tqdm's bar shows the progress instead."""
        if sys.stdout.isatty():
            console.log_only(line)
        else:
            progress.write(line)

    def epoch_end(self, record, state, progress, stage='main', epochs=None):
        epoch, epochs = record['epoch'], epochs or self.args.epochs
        done = len(state['history'])
        mean_time = sum(r['epoch_time'] for r in state['history']) / done
        eta = _duration(mean_time * (epochs - epoch))
        if stage != 'main':  # no validation, no files besides the stage checkpoint
            progress.write(f"{self.prefix}{stage} epoch {epoch}/{epochs}  lr {record['lr']:.4g}  "
                           f"loss {record['train_loss']:.4f}  {record['epoch_time']:.1f}s  eta {eta}")
            return
        progress.write(f"{self.prefix}epoch {epoch}/{epochs}  lr {record['lr']:.4g}  loss {record['train_loss']:.4f}  "
                       f"train {record['train_top1']:.2f}%  test {record['val_top1']:.2f}% "
                       f"(top-5 {record['val_top5']:.2f}%)  best {state['best_acc']:.2f}%  "
                       f"{record['epoch_time']:.1f}s  eta {eta}")
        with self._tensorboard_errors("this epoch's TensorBoard scalars", "the checkpoints of this epoch are written"):
            self._tensorboard(record, epoch)
        self.write(state, status='running')

    def _tensorboard(self, record, epoch):
        if self.tensorboard and self.writer is None:
            from torch.utils.tensorboard import SummaryWriter  # slow import, only when logging
            _quiet_disk_full_in_threads()
            self.writer = SummaryWriter(log_dir=self.files.tensorboard)
        if self.writer is not None:
            for key, value in record.items():
                if key not in ('epoch', 'epoch_time'):
                    group = 'train' if key.startswith('train_') or key == 'lr' else 'test'
                    self.writer.add_scalar(f"{group}/{key.replace('train_', '').replace('val_', '')}",
                                           value, epoch)
            self.writer.flush()

    def write(self, state, status):
        last = state['history'][-1] if state['history'] else {}
        self.files.write_metrics(dict(
            status=status,
            model=self.files.model_name,
            epochs_done=state['epoch'],
            epochs=self.args.epochs,
            last=dict(epoch=last.get('epoch'), top1=last.get('val_top1'), top5=last.get('val_top5')),
            best=dict(epoch=state['best_epoch'], top1=state['best_acc'], top5=state['best_top5']),
            wall_time_s=round(state['wall_time'], 2),
            num_params=self.num_params,
            args={k: v for k, v in self.arguments.items() if _is_plain(v)},
            run=self.run,
            provenance=self.provenance,
            **({'weights_sha256': self.weights} if self.weights else {}),
            history=state['history'],
        ))

    @contextlib.contextmanager
    def _tensorboard_errors(self, what, kept):
        """A full disk while TensorBoard writes ``what`` is one line saying what is ``kept``; other errors pass."""
        try:
            yield
        except OSError as err:
            full = disk_full_error(err, self.files.tensorboard, what, kept=kept)
            if full is None:
                raise
            raise full from None

    def finish(self, state, status, weights=None):
        """Close TensorBoard's file, then write the final status (last: it says the run's files are complete);
        ``weights`` ({'last', 'best'}: sha256 of the saved weights) lets a student's recorded teacher hash find
        the run that trained its teacher."""
        self.weights = weights or self.weights
        if self.writer is not None:
            writer, self.writer = self.writer, None
            with self._tensorboard_errors("the last TensorBoard scalars", "the checkpoints are written"):
                writer.close()
        self.write(state, status)


def _quiet_disk_full_in_threads():
    """TensorBoard writes from a thread of its own, which prints a traceback when the disk is full and hands the
    error to the next write here, where it becomes one line; keep the thread's traceback off the console."""
    if getattr(threading.excepthook, 'kdzoo', False):
        return
    previous = threading.excepthook

    def hook(failure):  # threading.ExceptHookArgs
        if disk_full_cause(failure.exc_value) is None:
            previous(failure)
    hook.kdzoo = True
    threading.excepthook = hook


def _is_plain(value):
    return isinstance(value, (int, float, str, bool, type(None), list, tuple))


def _duration(seconds):
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    return f"{h}h{rem // 60:02d}m" if h else f"{rem // 60}m{rem % 60:02d}s"

"""Run output: one console line per epoch, TensorBoard scalars and the metrics JSON."""
from .run_files import RunFiles


class RunLogger:
    def __init__(self, files: RunFiles, args, num_params, tensorboard=True, label=None):
        self.files = files
        self.prefix = f'[{label}] ' if label else ''  # which student of a pack (engine/pack.py) a line is about
        self.args = args
        self.num_params = num_params
        self.tensorboard = tensorboard
        self.writer = None  # opened at the first epoch's end, so a run refused at start writes nothing

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
        if self.tensorboard and self.writer is None:
            from torch.utils.tensorboard import SummaryWriter  # slow import, only when logging
            self.writer = SummaryWriter(log_dir=self.files.tensorboard)
        if self.writer is not None:
            for key, value in record.items():
                if key not in ('epoch', 'epoch_time'):
                    group = 'train' if key.startswith('train_') or key == 'lr' else 'test'
                    self.writer.add_scalar(f"{group}/{key.replace('train_', '').replace('val_', '')}",
                                           value, epoch)
            self.writer.flush()
        self.write(state, status='running')

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
            args={k: v for k, v in vars(self.args).items() if _is_plain(v)},
            history=state['history'],
        ))

    def finish(self, state, status):
        self.write(state, status)
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _is_plain(value):
    return isinstance(value, (int, float, str, bool, type(None), list, tuple))


def _duration(seconds):
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    return f"{h}h{rem // 60:02d}m" if h else f"{rem // 60}m{rem % 60:02d}s"

"""Turn a save/ folder into the papers' tables: teacher/student pair x method, mean ± std over trials.

    python tools/report.py                          # markdown tables of last-epoch and best top-1
    python tools/report.py --save_root save --plots curves/   # plus a learning-curve PNG per pair

Reads every run's metrics.json. Students are grouped by (data set, teacher, student, method, loss
weights) across trials; teachers and vanilla students (train_teacher.py runs) give the 'Teacher' and
'Student' rows. Papers differ in which epoch they report (RepDistiller: last; ND, NORM: best), so both
tables are printed. Runs that have not finished are listed below the tables, not averaged.
"""
import argparse
import glob
import json
import os
import statistics
import sys
from collections import defaultdict


def read_runs(save_root):
    runs = []
    for path in sorted(glob.glob(os.path.join(save_root, '*', 'models', '*', 'metrics.json'))):
        try:
            with open(path) as f:
                metrics = json.load(f)
        except (OSError, json.JSONDecodeError):
            print(f"skipping unreadable {path}", file=sys.stderr)
            continue
        metrics['path'] = os.path.dirname(path)
        metrics['kind'] = os.path.basename(os.path.dirname(os.path.dirname(os.path.dirname(path))))
        runs.append(metrics)
    return runs


def method_label(args):
    weights = f"r={args.get('gamma'):g}, a={args.get('alpha'):g}, b={args.get('beta'):g}"
    return f"{args['distill']} ({weights})"


def mean_std(values):
    if not values:
        return ''
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f} ({len(values)})"


def tables(runs, dataset=None):
    """{pair: {row: {'last': [...], 'best': [...]}}} plus the list of unfinished runs."""
    cells = defaultdict(lambda: defaultdict(lambda: {'last': [], 'best': []}))
    vanilla = defaultdict(lambda: {'last': [], 'best': []})
    unfinished = []
    for run in runs:
        args = run.get('args', {})
        if dataset and args.get('dataset') != dataset:
            continue
        if run.get('status') != 'finished':
            unfinished.append(f"{run['path']}: {run.get('status')} after {run.get('epochs_done')} epochs")
            continue
        if run['kind'] == 'teachers':
            target = vanilla[(args.get('dataset'), args.get('model'))]
        else:
            pair = (args.get('dataset'), args.get('model_t'), args.get('model_s'))
            target = cells[pair][method_label(args)]
        target['last'].append(run['last']['top1'])
        target['best'].append(run['best']['top1'])
    for (dataset_, teacher, student), rows in cells.items():
        for label, model in (('Teacher', teacher), ('Student', student)):
            if (dataset_, model) in vanilla:
                rows[label] = vanilla[(dataset_, model)]
    return cells, unfinished


def markdown(cells, which):
    pairs = sorted(cells)
    rows = sorted({row for pair in pairs for row in cells[pair]} - {'Teacher', 'Student'})
    rows = [r for r in ('Teacher', 'Student') if any(r in cells[p] for p in pairs)] + rows
    header = '| method | ' + ' | '.join(f"{t} → {s}" + (f" ({d})" if d != 'cifar100' else '')
                                         for d, t, s in pairs) + ' |'
    lines = [header, '|' + '---|' * (len(pairs) + 1)]
    for row in rows:
        values = [mean_std(cells[p][row][which]) if row in cells[p] else '' for p in pairs]
        lines.append(f"| {row} | " + ' | '.join(values) + ' |')
    return '\n'.join(lines)


def plot_curves(runs, folder):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    os.makedirs(folder, exist_ok=True)
    by_pair = defaultdict(list)
    for run in runs:
        args = run.get('args', {})
        if run['kind'] == 'students' and run.get('history'):
            by_pair[(args.get('dataset'), args.get('model_t'), args.get('model_s'))].append(run)
    written = []
    for (dataset, teacher, student), pair_runs in sorted(by_pair.items()):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for run in pair_runs:
            epochs = [h['epoch'] for h in run['history']]
            ax.plot(epochs, [h['val_top1'] for h in run['history']],
                    label=f"{method_label(run['args'])} #{run['args'].get('trial')}", linewidth=1)
        ax.set(xlabel='epoch', ylabel='test top-1 (%)', title=f"{teacher} → {student} on {dataset}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        path = os.path.join(folder, f"{dataset}_{teacher}_to_{student}.png")
        fig.savefig(path, dpi=120, bbox_inches='tight')
        plt.close(fig)
        written.append(path)
    return written


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--save_root', default='./save')
    parser.add_argument('--dataset', default=None, help='only runs on this data set')
    parser.add_argument('--plots', default=None, metavar='FOLDER', help='write learning-curve PNGs here')
    args = parser.parse_args(argv)
    runs = read_runs(args.save_root)
    if not runs:
        print(f"error: no runs (metrics.json) under '{args.save_root}'; pass --save_root", file=sys.stderr)
        sys.exit(2)
    cells, unfinished = tables(runs, args.dataset)
    print('## Top-1 (%), last epoch\n')
    print(markdown(cells, 'last'))
    print('\n## Top-1 (%), best epoch\n')
    print(markdown(cells, 'best'))
    if unfinished:
        print('\nNot finished (left out):\n' + '\n'.join(f"- {u}" for u in unfinished))
    if args.plots:
        for path in plot_curves(runs, args.plots):
            print(f"wrote {path}")
    return cells


if __name__ == '__main__':
    main()

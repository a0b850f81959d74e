"""Turn a save/ folder into the papers' tables: one table per kind of run, mean ± std over trials.

    python tools/report.py                                   # every table under ./save
    python tools/report.py --save_root save --dataset cifar100 --plots    # + learning curves in save/plots/

Reads every metrics.json under --save_root, at any depth: teachers and vanilla networks (train_teacher.py),
students (train_student.py, packed into one process or not), online runs (train_online_mcl.py: L-MCL, MCL)
and their --baseline runs. Runs are averaged only when everything recorded that changes the result is
equal (helper/provenance.py: networks, the teacher file's weights hash, the recipe, the method's settings);
only the trial and the seed tell trials apart. There is a table per kind, data set and recipe; a recipe
that differs from the data set's default names its table (``epochs=2``), a row is the method with the
settings that differ from its defaults (``simkd f=8``), and one architecture's teacher files are columns of
their own. Student tables' 'Teacher' row is the teacher file's test accuracy, 'Student' the vanilla runs
(train_teacher.py) of the student with the same recipe; online tables' 'Baseline' the --baseline runs.
Papers differ in the epoch they report (RepDistiller: last; ND, NORM: best), so both are printed. Each table
then sets the papers' numbers (tools/published_top1.csv, --published) beside ours, in the paper's own measure:
mean ± std, trials, difference; --plots draws them as lines. Unfinished runs are listed below, not averaged; an
unreadable metrics.json is named in one line and left out.
"""
import argparse
import csv
import errno
import glob
import hashlib
import json
import os
import re
import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass, field

from helper.errors import KDZooError, run_cli
from helper.provenance import describe_run

SECTIONS = (('teacher', 'Trained from scratch (train_teacher.py)'),
            ('student', 'Students (train_student.py)'),
            ('online', 'Online distillation (train_online_mcl.py)'),
            ('baseline', 'Baselines (train_online_mcl.py --baseline)'))
MEASURES = {'teacher': ('last', 'best'), 'baseline': ('last', 'best'), 'student': ('last', 'best'),
            'online': ('last', 'best', 'released')}
MEASURE_TITLES = {'last': 'last epoch', 'best': 'best epoch',
                  'released': "best over all heads and epochs (the L-MCL code's number)"}
SHORT_RUN_EPOCHS = 30  # curves of runs this short get a marker per epoch
# The papers' top-1 of every cell the table scripts run (tests/test_published.py checks both ways).
PUBLISHED = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'published_top1.csv')
# Which of our measures a paper's number is compared with: the same epoch rule. 'unstated': the paper does not
# say, and its code keeps RepDistiller's convention (the last epoch) as far as kdzoo knows.
MEASURE_OF_METRIC = {'last': 'last', 'best': 'best', 'released': 'released', 'unstated': 'last'}


@dataclass
class Entry:
    """One run's contribution to one table column."""
    values: dict  # measure -> top-1
    curve: list   # [(epoch, test top-1)]


@dataclass
class Run:
    path: str
    metrics: dict
    record: dict
    status: str
    entries: dict = field(default_factory=dict)  # column -> Entry
    shown: str = ''   # the settings named in its row: 'f=8'
    label: str = ''   # its row: method and shown settings, 'simkd f=8'
    table: tuple = ()  # (kind, data set, recipe deviations)


# ---- reading ----------------------------------------------------------------------------------------

def read_runs(save_root):
    """(runs, problems): every readable metrics.json under ``save_root``, and one line per unreadable one."""
    runs, problems = [], []
    for path in sorted(glob.glob(os.path.join(glob.escape(save_root), '**', 'metrics.json'), recursive=True)):
        try:
            with open(path, encoding='utf-8') as f:
                metrics = json.load(f)
            runs.append(make_run(os.path.dirname(path), metrics))
        except OSError as err:
            problems.append(f"{path}: cannot be read ({err.strerror or err})")
        except json.JSONDecodeError as err:
            problems.append(f"{path}: not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})")
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            problems.append(f"{path}: not a kdzoo metrics.json ({type(err).__name__}: {err})")
    return runs, problems


def make_run(folder, metrics):
    if not isinstance(metrics, dict) or not isinstance(metrics.get('args'), dict):
        raise ValueError("no 'args' record")
    record = metrics.get('run')
    if not isinstance(record, dict) or not {'kind', 'method', 'column', 'recipe', 'settings'} <= set(record):
        record = describe_run(metrics['args'], metrics.get('provenance'))  # recorded before 'run' existed
    record = normalised(record)
    run = Run(folder, metrics, record, str(metrics.get('status')))
    if run.status == 'finished':
        run.entries = entries_of(run)
    return run


def normalised(record):
    """ONE runs record L-MCL's method name beside their own 'one' setting: their method is 'one'."""
    if record['kind'] == 'online' and (record.get('settings') or {}).get('one'):
        return dict(record, method='one')
    return record


def entries_of(run):
    m, record, column = run.metrics, run.record, run.record['column']
    history = m.get('history') or []
    if record['method'] in ('one', 'uskd'):
        # ONE: one network and its extra branches; branch 0, the deployed network, is the run's number (the
        # official code's best_acc too), in a column of the network it shares with the --baseline runs; USKD:
        # one network and its weak head, likewise
        model = (column.get('peers') or [column['arch']])[0]
        key = ((f"{column['arch']} ×{record['settings'].get('num_branches')}" if record['method'] == 'one'
                else column['arch']), model)
    elif record['kind'] != 'online':
        key = {'teacher': lambda: (column['model'],), 'baseline': lambda: (column['model'],),
               'student': lambda: (column['model_t'], column['model_s'], column.get('teacher_sha256'))}
        key = key[record['kind']]()
    else:
        return peer_entries(m, column, history)
    curve = [(h['epoch'], h['val_top1']) for h in history]
    last, best = float(m['last']['top1']), float(m['best']['top1'])
    # a single network's 'released-code' number is its best epoch (the Baseline row of online tables)
    return {key: Entry(dict(last=last, best=best, released=best), curve)}


def peer_entries(m, column, history):
    """An L-MCL or MCL run: one column per peer architecture, each the mean over the peers of that
    architecture."""
    arch = f"{column['arch']} ×{column['number_net']}"
    by_model = defaultdict(list)
    for peer in m['peers']:
        by_model[peer['model']].append(peer)
    entries = {}
    for model, peers in by_model.items():
        values = {measure: statistics.mean(float(p[key]['top1']) for p in peers)
                  for measure, key in (('last', 'last'), ('best', 'best'), ('released', 'released_code_best'))}
        curve = [(h['epoch'], statistics.mean(h[f"val_peer{p['peer']}_top1"] for p in peers)) for h in history]
        entries[(arch, model)] = Entry(values, curve)
    return entries


def own_label(record):
    """The row a run has by itself: its method and the settings that differ from their recorded defaults."""
    return ' '.join(filter(None, [record['method'], describe(deviations(record, 'settings', set()),
                                                             record.get('names'))]))


def published_key(record, column):
    """(data set, teacher or online architecture, network, row) of one of a run's table columns: the key of
    its paper's number in PUBLISHED. Teachers and --baseline runs have no teacher ('')."""
    dataset = record['column'].get('dataset')
    if record['kind'] == 'student':
        return dataset, column[0], column[1], own_label(record)
    if record['kind'] == 'online':
        return dataset, record['column']['arch'], column[1], own_label(record)
    return dataset, '', column[0], own_label(record)


# ---- grouping ---------------------------------------------------------------------------------------

def _frozen(value):
    return json.dumps(value, sort_keys=True, default=str)


def _varying(runs, part):
    """Keys of record[part] with more than one value among ``runs`` (missing counts as a value)."""
    keys = {k for r in runs for k in r.record[part]}
    return {k for k in keys if len({_frozen(r.record[part].get(k, '<absent>')) for r in runs}) > 1}


def deviations(record, part, varying):
    """The items of record[part] worth naming: those that differ from the recorded default, and, where no
    default is recorded (runs from before defaults were), those that vary among comparable runs."""
    items, defaults = record[part], record.get('defaults') or {}
    return {k: v for k, v in items.items()
            if (k in defaults and _frozen(defaults[k]) != _frozen(v)) or (k not in defaults and k in varying)}


def describe(items, names=None):
    names = names or {}
    return ' '.join(f"{names.get(k, k)}={_show(v)}" for k, v in sorted(items.items()))


def _show(value):
    if isinstance(value, float):
        return f'{value:g}'
    if isinstance(value, (list, tuple)):
        return ','.join(_show(v) for v in value)
    return str(value)


def assign_tables(runs):
    """Set each finished run's ``table`` (kind, data set, recipe deviations) and ``label`` (method +
    settings deviations). A label is widened by every setting in which runs of one cell still differ, so
    that no cell averages runs that differ in anything but trial and seed."""
    by_kind = defaultdict(list)
    for run in runs:
        by_kind[(run.record['kind'], run.record['column'].get('dataset'))].append(run)
    for (kind, dataset), group in by_kind.items():
        varying = _varying(group, 'recipe')
        for run in group:
            run.table = (kind, dataset, describe(deviations(run.record, 'recipe', varying)))
    by_method = defaultdict(list)
    for run in runs:
        by_method[(run.table, run.record['method'])].append(run)
    for group in by_method.values():
        extra = set()
        for _ in range(len(group[0].record['settings']) + 1):
            varying = _varying(group, 'settings')
            for run in group:
                shown = deviations(run.record, 'settings', varying)
                shown.update({k: run.record['settings'].get(k) for k in extra})
                run.shown = describe(shown, run.record.get('names'))
                run.label = ' '.join(filter(None, [run.record['method'], run.shown]))
            cells = defaultdict(list)
            for run in group:
                for column in run.entries:
                    cells[(run.label, column)].append(run)
            mixed = set()
            for cell in cells.values():
                full = {(_frozen(r.record['settings']), _frozen(r.record['recipe'])) for r in cell}
                if len(full) > 1:
                    mixed |= _varying(cell, 'settings')
            if not mixed - extra:
                break
            extra |= mixed


# ---- tables -----------------------------------------------------------------------------------------

def mean_std(values):
    if not values:
        return ''
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f} ({len(values)})"


@dataclass
class Table:
    kind: str
    dataset: str
    recipe: str
    columns: list
    rows: dict        # label -> {column: [Entry]}; reference rows first
    headers: dict     # column -> header text
    notes: list
    published: dict = field(default_factory=dict)  # (row, column) -> [rows of PUBLISHED]

    @property
    def title(self):
        return f"{self.dataset}, {self.recipe or 'recipe defaults'}"

    def markdown(self, measure):
        corner = 'model' if self.kind in ('teacher', 'baseline') else 'method'
        if self.kind in ('teacher', 'baseline'):  # one row per network, one column per measure
            lines = [f"| {corner} | last | best |", '|---|---|---|']
            for label, cells in self.rows.items():
                entries = [e for column_entries in cells.values() for e in column_entries]
                lines.append(f"| {label} | " + ' | '.join(mean_std([e.values[m] for e in entries])
                                                         for m in ('last', 'best')) + ' |')
            return '\n'.join(lines)
        lines = [f"| {corner} | " + ' | '.join(self.headers[c] for c in self.columns) + ' |',
                 '|' + '---|' * (len(self.columns) + 1)]
        for label, cells in self.rows.items():
            lines.append(f"| {label} | " + ' | '.join(mean_std([e.values[measure] for e in cells.get(c, [])])
                                                     for c in self.columns) + ' |')
        return '\n'.join(lines)


def read_published(path=PUBLISHED):
    """(data set, teacher, network, row) -> [the rows of the published top-1 file for that cell]; ``top1`` is a
    float, or None for a cell no paper's number was found for (its ``note`` says why)."""
    cells = defaultdict(list)
    with open(path, newline='', encoding='utf-8') as f:
        for row in csv.DictReader(f):
            row['top1'] = float(row['top1']) if row['top1'] else None
            cells[(row['dataset'], row['teacher'], row['network'], row['method'])].append(row)
    return dict(cells)


def build_tables(runs, dataset=None, published=None):
    """The tables of the finished runs, in SECTIONS order, then data set and recipe; ``published`` (default:
    read_published()) gives each cell its papers' numbers."""
    published = read_published() if published is None else published
    finished = [r for r in runs if r.status == 'finished' and r.entries
                and (dataset is None or r.record['column'].get('dataset') == dataset)]
    assign_tables(finished)
    grouped = defaultdict(list)
    for run in finished:
        grouped[run.table].append(run)
    order = {kind: i for i, (kind, _) in enumerate(SECTIONS)}
    tables = []
    for key in sorted(grouped, key=lambda k: (order[k[0]], str(k[1]), k[2])):
        kind, data, recipe = key
        members = grouped[key]
        rows = defaultdict(lambda: defaultdict(list))
        if kind in ('teacher', 'baseline'):
            table = Table(kind, data, recipe, [], {}, {}, [])
            for run in members:
                for column, entry in run.entries.items():
                    label = ' '.join(filter(None, [column[0], run.shown]))
                    rows[label][column].append(entry)
                    find_published(table, published, run, label, column)
            table.rows = dict(sorted(rows.items()))
            tables.append(table)
            continue
        place = {}  # online columns keep the peers' order within an arch
        table = Table(kind, data, recipe, [], {}, {}, [])
        for run in members:
            for i, (column, entry) in enumerate(run.entries.items()):
                rows[run.label][column].append(entry)
                place.setdefault(column, i)
                find_published(table, published, run, run.label, column)
        columns = table.columns = sorted(place, key=lambda c: (str(c[0]), place[c], tuple(map(str, c))))
        if kind == 'student':
            student_references(table, finished, columns)
        else:
            online_references(table, finished, columns)
        table.rows.update(sorted(rows.items()))
        tables.append(table)
    return tables


def find_published(table, published, run, label, column):
    """Note the papers' numbers for the table cell (``label``, ``column``) that ``run`` is a trial of."""
    rows = published.get(published_key(run.record, column))
    if rows:
        table.published.setdefault((label, column), rows)


def paper_comparison(table):
    """Markdown: each cell with a paper's number, ours in the same measure (mean ± std, trials), the
    difference, and where the number comes from; cells the papers have no number for, with the reason."""
    lines = ['| method | column | ours | trials | paper | ours − paper | source |', '|---|---|---|---|---|---|---|']
    for (label, column), rows in table.published.items():
        header = table.headers.get(column, column[0])
        entries = table.rows.get(label, {}).get(column, [])
        for row in rows:
            if row['top1'] is None:
                lines.append(f"| {label} | {header} | | {len(entries)} | none | | {row['note']} |")
                continue
            measure = MEASURE_OF_METRIC[row['metric']]
            values = [e.values[measure] for e in entries]
            source = '; '.join(filter(None, [row['paper'], row['table'], row['note']]))
            lines.append(f"| {label} | {header} | {mean_std(values)} ({MEASURE_TITLES[measure].split(' (')[0]}) | "
                         f"{len(values)} | {row['top1']:.2f} ({row['metric']}) | "
                         f"{statistics.mean(values) - row['top1']:+.2f} | {source} |")
    return '\n'.join(lines)


def student_references(table, runs, columns):
    """Headers, the 'Teacher' row (the teacher file's accuracy) and the 'Student' row (vanilla runs of the
    student, same data set and recipe) of a student table."""
    files = defaultdict(set)
    for model_t, model_s, sha in columns:
        files[(model_t, model_s)].add(sha)
    teachers, vanilla = {}, {}
    for column in columns:
        model_t, model_s, sha = column
        header = f"{model_t} → {model_s}"
        if len(files[(model_t, model_s)]) > 1:
            header += f" [teacher {sha[:8] if sha else 'unrecorded'}]"
        table.headers[column] = header
        entry, note = teacher_entry(runs, table.dataset, model_t, sha)
        if entry:
            teachers[column] = [entry]
        if note and note not in table.notes:
            table.notes.append(note)
        vanilla[column] = [e for r in runs if r.table == ('teacher', table.dataset, table.recipe)
                           for c, e in r.entries.items() if c == (model_s,)]
    if any(teachers.values()):
        table.rows['Teacher'] = teachers
    if any(vanilla.values()):
        table.rows['Student'] = vanilla


def teacher_entry(runs, dataset, model_t, sha):
    """The teacher file's test top-1 as the student runs measured it, else from the run that trained it
    (matched by weights hash), else (runs without hashes) the teacher runs of the architecture."""
    if sha:
        students = [r for r in runs if r.record['kind'] == 'student'
                    and r.record['column'].get('teacher_sha256') == sha]
        measured = [r.metrics['args']['teacher_top1'] for r in students
                    if isinstance(r.metrics['args'].get('teacher_top1'), (int, float))]
        path = next((p for p in (((r.metrics.get('provenance') or {}).get('teacher') or {}).get('path')
                                 for r in students) if p), '?')
        trained = next(((r, w) for r in runs if r.record['kind'] == 'teacher'
                        for w in ('best', 'last') if (r.metrics.get('weights_sha256') or {}).get(w) == sha), None)
        note = f"teacher {sha[:8]}: {path}"
        if trained:
            note += f" ({trained[1]} weights of {trained[0].path})"
        if measured:  # the file itself on the test set, as the student runs evaluated it
            value = statistics.mean(measured)
        elif trained:
            value = float(trained[0].metrics[trained[1]]['top1'])
        else:
            return None, note + " (no accuracy recorded: its student runs skipped validation)"
        return Entry(dict(last=value, best=value, released=value), []), note
    legacy = [e for r in runs if r.record['kind'] == 'teacher' and r.record['column'].get('dataset') == dataset
              for c, e in r.entries.items() if c == (model_t,)]
    if not legacy:
        return None, None
    values = {m: statistics.mean(e.values[m] for e in legacy) for m in ('last', 'best', 'released')}
    return Entry(values, []), f"teacher {model_t}: mean of its {len(legacy)} train_teacher.py run(s) (no weights " \
                              f"hash recorded)"


def online_references(table, runs, columns):
    baseline = {}
    for column in columns:
        arch, model = column
        table.headers[column] = f"{arch} ({model})"
        baseline[column] = [e for r in runs if r.table == ('baseline', table.dataset, table.recipe)
                            for c, e in r.entries.items() if c == (model,)]
    if any(baseline.values()):
        table.rows['Baseline'] = baseline


# ---- plots ------------------------------------------------------------------------------------------

def curve_figure(table, column):
    """matplotlib Figure: each row's test top-1 against epoch (mean over trials, ± std band with two or
    more), the reference rows (Teacher, Student, Baseline) as horizontal lines."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401  (MaxNLocator below)
    import numpy as np

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for label, cells in table.rows.items():
        entries = cells.get(column, [])
        if not entries:
            continue
        if label in ('Teacher', 'Student', 'Baseline'):
            value = statistics.mean(e.values['best' if label == 'Teacher' else 'last'] for e in entries)
            style = dict(Teacher=('black', '--'), Student=('dimgray', ':'), Baseline=('dimgray', ':'))[label]
            ax.axhline(value, color=style[0], linestyle=style[1], linewidth=1.2, label=f"{label} {value:.2f}%")
            continue
        curves = [e.curve for e in entries if e.curve]
        if not curves:
            continue
        length = min(len(c) for c in curves)
        epochs = np.array([epoch for epoch, _ in curves[0][:length]])
        values = np.array([[v for _, v in c[:length]] for c in curves])
        mean = values.mean(axis=0)
        marker = 'o' if length <= SHORT_RUN_EPOCHS else None
        line, = ax.plot(epochs, mean, marker=marker, markersize=3, linewidth=1.3,
                        label=f"{label} ({len(curves)} trial{'s' if len(curves) > 1 else ''})")
        for row in table.published.get((label, column), []):
            if row['top1'] is not None:  # the paper's number, in the row's colour
                ax.axhline(row['top1'], color=line.get_color(), linestyle='-.', linewidth=1,
                           label=f"{label}: {row['paper'].split(' (')[0]} {row['top1']:.2f}% ({row['metric']})")
        if len(curves) > 1:
            std = values.std(axis=0, ddof=1)
            ax.fill_between(epochs, mean - std, mean + std, color=line.get_color(), alpha=0.2, linewidth=0)
    header = table.headers.get(column, ' '.join(map(str, column)))
    ax.set(xlabel='epoch', ylabel='test top-1 (%)', title=f"{header} on {table.title}")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc='lower right')
    return fig


def plot_tables(tables, folder):
    import matplotlib.pyplot as plt
    try:
        os.makedirs(folder, exist_ok=True)
        if not os.path.isdir(folder):
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
    except OSError as err:
        raise KDZooError(f"cannot write the plots into '{folder}' ({err.strerror or err}); pass --plots a "
                         f"folder that can be written") from None
    written = []
    for table in tables:
        for column in table.columns:
            fig = curve_figure(table, column)
            name = '_'.join([table.kind, table.dataset, *[str(c)[:8] if i == 2 else str(c)
                                                           for i, c in enumerate(column) if c]])
            if table.recipe:
                name += '_' + (table.recipe if len(table.recipe) <= 40
                               else hashlib.sha256(table.recipe.encode()).hexdigest()[:8])
            path = os.path.join(folder, re.sub(r'[^A-Za-z0-9_.=,+-]+', '-', name) + '.png')
            try:
                fig.savefig(path, dpi=120, bbox_inches='tight')
            except OSError as err:
                raise KDZooError(f"cannot write the plots into '{folder}' ({err.strerror or err}); pass --plots a "
                                 f"folder that can be written") from None
            finally:
                plt.close(fig)
            written.append(path)
    return written


# ---- output -----------------------------------------------------------------------------------------

def report(tables, unfinished):
    lines = []
    titles = dict(SECTIONS)
    for table in tables:
        lines.append(f"# {titles[table.kind]}: {table.title}\n")
        if table.kind in ('teacher', 'baseline'):
            lines += ['Top-1 (%), mean ± std (trials)\n', table.markdown('last'), '']
        else:
            for measure in MEASURES[table.kind]:
                lines += [f"## Top-1 (%), {MEASURE_TITLES[measure]}\n", table.markdown(measure), '']
        if table.published:
            lines += ["## Against the papers (ours in the paper's measure; tools/published_top1.csv)\n",
                      paper_comparison(table), '']
        if table.kind in ('teacher', 'baseline'):
            continue
        lines += [f"- {note}" for note in table.notes]
        if table.notes:
            lines.append('')
    if not tables:
        lines.append('No finished runs.\n')
    if unfinished:
        lines.append('Not finished (left out):')
        lines += [f"- {run.path}: {run.status} after {run.metrics.get('epochs_done')} of "
                  f"{run.metrics.get('epochs')} epochs" for run in unfinished]
    return '\n'.join(lines).rstrip() + '\n'


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--save_root', default='./save',
                        help='folder searched for metrics.json, at any depth (default: ./save)')
    parser.add_argument('--dataset', default=None, help='only runs on this data set (default: every data set)')
    parser.add_argument('--plots', nargs='?', const='', default=None, metavar='FOLDER',
                        help='write a learning-curve PNG per table column (default folder: <save_root>/plots)')
    parser.add_argument('--published', default=PUBLISHED, metavar='CSV',
                        help="the papers' top-1 per cell, compared with ours (default: tools/published_top1.csv)")
    args = parser.parse_args(argv)
    runs, problems = read_runs(args.save_root)
    for problem in problems:
        print(f"warning: {problem}; left out", file=sys.stderr)
    if not runs:
        found = f"; {len(problems)} metrics.json could not be read" if problems else ''
        raise KDZooError(f"no runs (metrics.json) under '{args.save_root}'{found}; pass --save_root")
    try:
        published = read_published(args.published)
    except (OSError, KeyError, ValueError, csv.Error) as err:
        raise KDZooError(f"--published '{args.published}' cannot be read ({err}); pass a CSV with the columns of "
                         f"tools/published_top1.csv") from None
    tables = build_tables(runs, args.dataset, published)
    unfinished = [r for r in runs if r.status != 'finished'
                  and (args.dataset is None or r.record['column'].get('dataset') == args.dataset)]
    sys.stdout.write(report(tables, unfinished))
    if args.plots is not None:
        for path in plot_tables([t for t in tables if t.kind in ('student', 'online')],
                                args.plots or os.path.join(args.save_root, 'plots')):
            print(f"wrote {path}")
    return tables


if __name__ == '__main__':
    run_cli(main)

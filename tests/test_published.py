"""tools/published_top1.csv, the papers' top-1 per cell, against the cells the table scripts run (both ways),
and tools/report.py's comparison of our runs with it (same measure, mean ± std, trials, difference, plot line)."""
import csv
import os

import pytest

from helper.provenance import describe_run
from test_report import student_run, teacher_run
from test_scripts import PARSERS, SCRIPTS, dry_run
from tools import report

FIELDS = ['dataset', 'teacher', 'network', 'method', 'top1', 'metric', 'paper', 'table', 'note']


def script_cells():
    """(data set, teacher or online architecture, network, row) -> script, for every cell a table script runs."""
    cells = {}
    for script in SCRIPTS:
        for words in dry_run(script, PACK='0', TRIALS='0'):
            args = PARSERS[words[1]](words[2:])
            for member in getattr(args, 'members', [args]):
                record = report.normalised(describe_run(vars(member)))
                column = record['column']
                if record['kind'] == 'student':
                    columns = [(column['model_t'], column['model_s'], None)]
                elif record['kind'] == 'online':
                    columns = [(column['arch'], peer) for peer in column['peers']]
                else:
                    columns = [(column['model'],)]
                for c in columns:
                    cells.setdefault(report.published_key(record, c), os.path.basename(script))
    return cells


def test_every_script_cell_has_a_published_value_or_a_reason_and_every_value_a_cell():
    with open(report.PUBLISHED, newline='', encoding='utf-8') as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == FIELDS
        rows = list(reader)
    cells = script_cells()
    assert len(cells) > 400  # the eleven scripts' cells, students, teachers, online runs and baselines
    keys = {(r['dataset'], r['teacher'], r['network'], r['method']) for r in rows}
    assert sorted(k for k in cells if k not in keys) == []  # every cell a script runs is in the file
    assert sorted(k for k in keys if k not in cells) == []  # every row of the file is a cell a script runs
    for row in rows:
        if row['top1']:
            assert 0 < float(row['top1']) < 100 and row['metric'] in report.MEASURE_OF_METRIC, row
            assert row['paper'] and row['table'], row
        else:
            assert row['note'].startswith('no source read') and not row['metric'], row
    published = report.read_published()
    # a few cells read by hand from the sources (RepDistiller's README, seed 004, seed 003, seed 002)
    assert [(r['top1'], r['metric']) for r in published[('cifar100', 'resnet32x4', 'resnet8x4', 'crd')]] == \
        [(75.51, 'last')]
    assert [(r['top1'], r['metric']) for r in published[('cifar100', 'wrn_40_2', 'wrn_16_2', 'norm')]] == \
        [(75.65, 'best')]
    assert [(r['top1'], r['metric']) for r in published[('cifar100', 'lmcl_res32_res110_cifar',
                                                         'resnet110_bottleneck', 'lmcl')]] == [(79.71, 'released')]
    assert [(r['top1'], r['metric']) for r in published[('cifar100', 'resnet56', 'resnet20', 'kd++')]] == \
        [(72.53, 'best')]
    assert {r['paper'].split(' (')[0] for r in published[('cifar100', 'resnet32x4', 'resnet8x4', 'dkd')]} == \
        {'mdistiller / DKD', 'ND', 'LS'}  # several papers' numbers for one cell: each is compared
    # LS's README (KD + LS, its per-pair temperature and weight), SDD's table image, ICKD's README
    assert [(r['top1'], r['metric']) for r in published[('cifar100', 'resnet32x4', 'resnet8x4',
                                                         'kd a=9 kd_T=2 logit_stand=True')]] == [(76.62, 'best')]
    assert [(r['top1'], r['metric']) for r in published[('cifar100', 'resnet32x4', 'ShuffleV1', 'sdd_dkd')]] == \
        [(77.3, 'best')]
    assert [(r['top1'], r['metric']) for r in published[('cifar100', 'vgg13', 'vgg8', 'ickd a=1')]] == \
        [(73.88, 'unstated')]
    # TTM's WTTM+ITRD (Table 2; its A.4/A.5 settings in the cell's name), LS's quotes of CAT-KD (Table 2) and SimKD
    assert [(r['top1'], r['metric']) for r in published[('cifar100', 'vgg13', 'vgg8',
                                                         'itrd add=wttm a=0.5 alpha_it=1.01 ttm_l=0.1')]] == \
        [(75.13, 'unstated')]
    assert [(r['top1'], r['metric']) for r in published[('cifar100', 'ResNet50', 'vgg8',
                                                         'itrd add=wttm a=1 lambda_mutual=0 ttm_l=0.1')]] == \
        [(76.0, 'unstated')]
    assert [r['top1'] for r in published[('cifar100', 'resnet32x4', 'resnet8x4', 'catkd')]] == [76.91]
    assert [r['top1'] for r in published[('imagenet', 'ResNet50', 'MobileNetV1', 'simkd')]] == [72.25]


@pytest.fixture
def compared(tmp_path):
    """kd at three trials and dist at one on digits, a vanilla teacher, and a published file for them."""
    root = str(tmp_path / 'save')
    for trial, (last, best) in enumerate([(60.0, 64.0), (62.0, 66.0), (64.0, 65.0)]):
        student_run(root, [best, last], '--distill', 'kd', '--trial', str(trial))
    student_run(root, [50.0, 70.0], '--distill', 'dist')
    teacher_run(root, 'resnet8', [40.0, 52.0])
    path = tmp_path / 'published.csv'
    with open(path, 'w', newline='') as f:
        writer = csv.DictWriter(f, FIELDS)
        writer.writeheader()
        writer.writerow(dict(dataset='digits', teacher='resnet20', network='resnet8', method='kd', top1='61.5',
                             metric='best', paper='Paper A (2020)', table='Table 1'))
        writer.writerow(dict(dataset='digits', teacher='resnet20', network='resnet8', method='kd', top1='60.5',
                             metric='last', paper='Paper B (2021)', table='Table 2'))
        writer.writerow(dict(dataset='digits', teacher='resnet20', network='resnet8', method='dist',
                             note='no source read: a reason'))
        writer.writerow(dict(dataset='digits', teacher='', network='resnet8', method='vanilla', top1='50',
                             metric='last', paper='Paper C (2019)', table='Table 3'))
    return root, str(path)


def test_report_compares_like_with_like(compared, capsys):
    root, path = compared
    tables = report.main(['--save_root', root, '--published', path])
    out = capsys.readouterr().out
    students = out.split('# Students')[1].split('## Against the papers')[1]
    # best epochs 64, 66, 65: 65 ± 1 against Paper A's best; last epochs 60, 62, 64: 62 ± 2 against Paper B's last
    assert '| kd | resnet20 → resnet8 | 65.00 ± 1.00 (3) (best epoch) | 3 | 61.50 (best) | +3.50 | Paper A (2020); ' \
           'Table 1 |' in students
    assert '| kd | resnet20 → resnet8 | 62.00 ± 2.00 (3) (last epoch) | 3 | 60.50 (last) | +1.50 | Paper B (2021); ' \
           'Table 2 |' in students
    assert '| dist | resnet20 → resnet8 | | 1 | none | | no source read: a reason |' in students
    scratch = out.split('# Trained from scratch')[1].split('# Students')[0]
    assert '| resnet8 | resnet8 | 52.00 (last epoch) | 1 | 50.00 (last) | +2.00 | Paper C (2019); Table 3 |' in scratch
    # the plot draws each paper's number as a horizontal line in its row's colour
    table = next(t for t in tables if t.kind == 'student')
    ax = report.curve_figure(table, table.columns[0]).axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert list(lines['kd: Paper A 61.50% (best)'].get_ydata()) == [61.5, 61.5]
    assert lines['kd: Paper B 60.50% (last)'].get_color() == lines['kd (3 trials)'].get_color()


def test_a_published_file_that_cannot_be_read_is_one_line(compared, tmp_path):
    root, _ = compared
    from helper.errors import KDZooError
    with pytest.raises(KDZooError, match=r"--published '.*nope.csv' cannot be read"):
        report.main(['--save_root', root, '--published', str(tmp_path / 'nope.csv')])


def test_help_names_every_default(capsys):
    with pytest.raises(SystemExit):
        report.main(['--help'])
    text = ' '.join(capsys.readouterr().out.split())
    for default in ('(default: ./save)', '(default: every data set)', '(default folder: <save_root>/plots)',
                    '(default: tools/published_top1.csv)'):
        assert default in text

"""What the benchmark scripts share: the flags of those that time KD runs, their one compute thread, and what
every one does with its figures besides printing them."""
import argparse
import json
import os

import torch


def one_compute_thread():
    """Time on one compute thread, here and in any process started from here, as BENCHMARKS.md's CPU figures
    were taken (the test suite's setting, which these scripts used to inherit by importing tests/conftest.py)."""
    os.environ['OMP_NUM_THREADS'] = '1'
    torch.set_num_threads(1)


def kd_parser(doc):
    """The command line of a script that times KD runs, described by the first line of ``doc``, with the flags
    they all take: the pair (the CRD table's resnet32x4 -> resnet8x4), RepDistiller's batch size, --precision
    and --json. The script adds its own flags."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument('--teacher', default='resnet32x4')
    parser.add_argument('--student', default='resnet8x4')
    parser.add_argument('--batch_size', type=int, default=64)
    parser.add_argument('--precision', default='auto')
    parser.add_argument('--json', help='write the results here too')
    return parser


def save(result, path):
    """Write ``result`` as JSON to ``path`` when one is given (``--json``); returns ``result``."""
    if path:
        with open(path, 'w') as f:
            json.dump(result, f, indent=2)
    return result

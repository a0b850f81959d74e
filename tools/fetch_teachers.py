"""Fetch published teachers into kdzoo's save/ layout, checksum-verified, instead of training them first.

    python tools/fetch_teachers.py                 # both sets (or: bash scripts/fetch_teachers.sh)
    python tools/fetch_teachers.py cifar           # mdistiller's cifar_teachers.tar only
    python tools/fetch_teachers.py imagenet --mirror /path/to/folder   # files already downloaded by hand

``cifar``: mdistiller's released ``cifar_teachers.tar`` (RepDistiller's CIFAR-100 teachers resnet56, resnet110,
resnet32x4, ResNet50, wrn_40_2 and vgg13, ``cifar_teachers/<model>_vanilla/ckpt_epoch_240.pth``: the teachers of
the DKD, NTCE-KD and RepDistiller tables) goes to ``save/teachers/models/<model>_vanilla/<model>_best.pth``,
where train_teacher.py --trial 0 would write it and the table scripts look.
``imagenet``: torchvision's ResNet-34 and ResNet-50 ImageNet weights (IMAGENET1K_V1, the seeds' ImageNet
teachers) go to ``save/teachers/models/<model>_vanilla_imagenet_trial_0/<model>_best.pth``.

Every file is checked against its SHA-256 before anything is read from it (torchvision's files also carry
the hash's first hex digits in their names, as torch.hub checks them). mdistiller publishes no checksum for
its archive: there each member is checked where its hash is known (resnet32x4's is that of RepDistiller's
own published file) and otherwise by reading it without executing code and loading it with strict=True into
its architecture; the hashes found are written to ``save/teachers/SHA256SUMS``. Each teacher is written in
kdzoo's checkpoint format (``model``, ``epoch``, ``best_acc`` where known, and where it came from) and loads
with strict=True. Existing teachers are kept unless --force. ``--mirror`` (or KDZOO_TEACHERS_MIRROR) is a
folder or base URL holding the same file names, for machines without access to the original hosts.
"""
import argparse
import hashlib
import io
import os
import tarfile
import urllib.error
import urllib.parse
import urllib.request

import torch
from tqdm import tqdm

from helper.checkpoint import atomic_save
from models.weights import extract_state_dict, load_state_strictly
from helper.errors import CheckpointError, KDZooError, run_cli
from helper.run_files import teacher_run_name
from models.registry import build_model

DOWNLOAD_TIMEOUT_S = 30

CIFAR_ARCHIVE = 'https://github.com/megvii-research/mdistiller/releases/download/checkpoints/cifar_teachers.tar'
# The teachers the archive must hold (mdistiller's models/cifar/__init__.py points at exactly these), and the
# SHA-256 of those members whose published bytes are known: resnet32x4's file is byte for byte the one
# RepDistiller published at shape2prog.csail.mit.edu/repo/resnet32x4_vanilla/ckpt_epoch_240.pth.
CIFAR_TEACHERS = ('resnet56', 'resnet110', 'resnet32x4', 'ResNet50', 'wrn_40_2', 'vgg13')
CIFAR_MEMBER = 'cifar_teachers/{}_vanilla/ckpt_epoch_240.pth'
CIFAR_MEMBER_SHA256 = {
    'resnet32x4': '22aa12e2b632b19ddde155ccf2388671842ddd304824b3095e0a7fff364beb4f',
}
CIFAR_ARCHIVE_SHA256 = None  # not published by mdistiller

# torchvision's IMAGENET1K_V1 weights: (model, URL, SHA-256; its first 8 hex digits are in the file name).
IMAGENET_WEIGHTS = (
    ('ResNet34', 'https://download.pytorch.org/models/resnet34-b627a593.pth',
     'b627a593bcbe140c234610266fe4f8ae95ea42fc881d091c9b6052e6b1d0590f'),
    ('ResNet50', 'https://download.pytorch.org/models/resnet50-0676ba61.pth',
     '0676ba61b6795bbe1773cffd859882e5e297624d384b6993f7c9e683e722fb8a'),
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('sets', nargs='*', metavar='cifar|imagenet', help='which teachers (default: both)')
    parser.add_argument('--save_root', default='./save', help='root of the save/ layout')
    parser.add_argument('--mirror', default=os.environ.get('KDZOO_TEACHERS_MIRROR'),
                        help='folder or base URL holding cifar_teachers.tar, resnet34-b627a593.pth and '
                             'resnet50-0676ba61.pth (default: $KDZOO_TEACHERS_MIRROR, else the original hosts)')
    parser.add_argument('--force', action='store_true', help='replace teachers that are already there')
    parser.add_argument('--keep-downloads', dest='keep_downloads', action='store_true',
                        help='keep the downloaded files in <save_root>/teachers/downloads/')
    args = parser.parse_args(argv)
    unknown = [name for name in args.sets if name not in ('cifar', 'imagenet')]
    if unknown:
        raise KDZooError(f"unknown teacher set '{unknown[0]}'; choose cifar, imagenet or both (the default)")
    args.sets = args.sets or ['cifar', 'imagenet']
    return args


def main(argv=None):
    args = parse_args(argv)
    installed = []
    sums = {}
    if 'cifar' in args.sets:
        installed += fetch_cifar(args, sums)
    if 'imagenet' in args.sets:
        installed += fetch_imagenet(args, sums)
    record_checksums(args.save_root, sums)
    print(f"{len(installed)} teacher(s) in place under {os.path.join(args.save_root, 'teachers', 'models')}")
    return installed


# ---- the two sets ---------------------------------------------------------------------------------

def fetch_cifar(args, sums):
    targets = {model: teacher_path(args.save_root, model, 'cifar100') for model in CIFAR_TEACHERS}
    wanted = [m for m in CIFAR_TEACHERS if args.force or not os.path.isfile(targets[m])]
    for model in CIFAR_TEACHERS:
        if model not in wanted:
            print(f"kept {targets[model]} (pass --force to replace it)")
    if not wanted:
        return list(targets.values())
    archive, downloaded = download(source_for(CIFAR_ARCHIVE, args.mirror), args.save_root, CIFAR_ARCHIVE_SHA256)
    sums[os.path.basename(CIFAR_ARCHIVE)] = sha256_file(archive)
    try:
        tar = tarfile.open(archive)
    except (tarfile.TarError, OSError) as err:
        raise CheckpointError(f"'{archive}' is not a readable tar archive ({err}); delete it and fetch again") from None
    with tar:
        names = set(tar.getnames())
        missing = [m for m in wanted if CIFAR_MEMBER.format(m) not in names]
        if missing:
            raise CheckpointError(f"'{archive}' lacks {', '.join(CIFAR_MEMBER.format(m) for m in missing)}; it is not "
                                  f"mdistiller's cifar_teachers.tar (delete it and fetch again)")
        for model in wanted:
            member = CIFAR_MEMBER.format(model)
            info = tar.getmember(member)
            if not info.isfile():
                raise CheckpointError(f"'{member}' in '{archive}' is not a regular file; delete the archive and "
                                      f"fetch again")
            data = tar.extractfile(info).read()
            digest = hashlib.sha256(data).hexdigest()
            expected = CIFAR_MEMBER_SHA256.get(model)
            if expected and digest != expected:
                raise CheckpointError(f"'{member}' in '{archive}' has SHA-256 {digest}, expected {expected}; the "
                                      f"archive is not the published one (delete it and fetch again)")
            sums[member] = digest
            install(data, f"{CIFAR_ARCHIVE}:{member}", digest, model, 'cifar100', 100, targets[model])
    finish_download(archive, downloaded, args.keep_downloads)
    return list(targets.values())


def fetch_imagenet(args, sums):
    installed = []
    for model, url, expected in IMAGENET_WEIGHTS:
        target = teacher_path(args.save_root, model, 'imagenet')
        installed.append(target)
        if os.path.isfile(target) and not args.force:
            print(f"kept {target} (pass --force to replace it)")
            continue
        path, downloaded = download(source_for(url, args.mirror), args.save_root, expected)
        sums[os.path.basename(url)] = expected
        with open(path, 'rb') as f:
            data = f.read()
        install(data, url, expected, model, 'imagenet', 1000, target)
        finish_download(path, downloaded, args.keep_downloads)
    return installed


# ---- pieces ---------------------------------------------------------------------------------------

def teacher_path(save_root, model, dataset):
    """Where train_teacher.py --model <model> --dataset <dataset> --trial 0 writes its best checkpoint."""
    return os.path.join(save_root, 'teachers', 'models', teacher_run_name(model, dataset, '0'), f'{model}_best.pth')


def source_for(url, mirror):
    """``url`` itself, or the file of the same name in the mirror (a folder or a base URL)."""
    if not mirror:
        return url
    name = os.path.basename(urllib.parse.urlparse(url).path)
    if '://' in mirror:
        return mirror.rstrip('/') + '/' + name
    return os.path.join(mirror, name)


def download(source, save_root, expected_sha256):
    """``(path, downloaded)``: a local ``source`` (a --mirror folder) is read where it is; a URL is downloaded
    into <save_root>/teachers/downloads/. The SHA-256 is checked when ``expected_sha256`` is known."""
    if '://' not in source:
        if not os.path.isfile(source):
            raise KDZooError(f"'{source}' does not exist; put the published file there or drop --mirror")
        check_sha256(source, source, expected_sha256, remove=False)
        return source, False
    folder = os.path.join(save_root, 'teachers', 'downloads')
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, os.path.basename(urllib.parse.urlparse(source).path))
    # A file already there is complete (downloads are renamed into place only once whole); it is reused when
    # its hash is right, or when no hash is published (the members are then checked one by one).
    if not (os.path.isfile(path) and (not expected_sha256 or sha256_file(path) == expected_sha256)):
        partial = path + '.part'  # renamed only once complete, so a cut-off download is never used
        try:
            copy_url(source, partial)
            os.replace(partial, path)
        finally:
            if os.path.exists(partial):
                os.remove(partial)
    check_sha256(path, source, expected_sha256, remove=True)
    return path, True


def check_sha256(path, source, expected, remove):
    if not expected:
        return
    digest = sha256_file(path)
    if digest != expected:
        if remove:
            os.remove(path)  # a bad download would otherwise be reused on every later run
        raise CheckpointError(f"'{source}' has SHA-256 {digest}, expected {expected}; it is not the published "
                              f"file" + (" and was removed" if remove else ""))


def copy_url(url, path):
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response, open(path, 'wb') as out:
            total = int(response.headers.get('Content-Length') or 0) or None
            with tqdm(total=total, unit='B', unit_scale=True, desc=os.path.basename(path), disable=None,
                      leave=False) as bar:
                for chunk in iter(lambda: response.read(1 << 20), b''):
                    out.write(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, 'reason', None) or err
        raise KDZooError(f"cannot download {url} ({reason}); check the network connection, or download the file "
                         f"by hand and pass its folder with --mirror") from None


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()


def install(data, source, digest, model, dataset, num_classes, target):
    """Read a published checkpoint, check that it loads strictly into ``model``, write it in kdzoo's format."""
    checkpoint = read_safely(data, source)
    network = build_model(model, num_classes, dataset)
    load_state_strictly(network, extract_state_dict(checkpoint, source), source, model, 'published checkpoint')
    saved = {'model': network.state_dict(), 'source': source, 'source_sha256': digest}
    if isinstance(checkpoint, dict):
        if 'epoch' in checkpoint:
            saved['epoch'] = int(checkpoint['epoch'])
        accuracy = checkpoint.get('best_acc', checkpoint.get('accuracy'))
        if accuracy is not None:
            saved['best_acc'] = float(accuracy)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    atomic_save(saved, target)
    print(f"{model}: {target}" + (f" (recorded top-1 {saved['best_acc']:.2f}%)" if 'best_acc' in saved else ''))


def read_safely(data, source):
    """torch.load without executing code from the file: weights_only, which also admits the numpy scalars
    and dtypes RepDistiller's checkpoints keep beside the weights (they are pickled, not plain tensors)."""
    try:
        return torch.load(io.BytesIO(data), map_location='cpu', weights_only=True)
    except Exception as err:  # noqa: BLE001 - every failure becomes the retry below or one clear line
        first = err
    try:
        with torch.serialization.safe_globals(numpy_globals()):
            return torch.load(io.BytesIO(data), map_location='cpu', weights_only=True)
    except Exception:  # noqa: BLE001
        reason = str(first).splitlines()[0][:160] if str(first) else type(first).__name__
        raise CheckpointError(f"'{source}' cannot be read as a checkpoint without running code from it ({reason})"
                              ) from None


def numpy_globals():
    """The numpy names a pickled numpy scalar refers to, under both numpy 1's and numpy 2's module names."""
    import numpy as np
    scalar = np.float64(0).__reduce__()[0]  # numpy's scalar reconstructor
    dtypes = [np.dtype] + [type(np.dtype(t)) for t in ('float64', 'float32', 'int64', 'int32', 'bool')]
    names = [scalar, *dtypes]
    for module in ('numpy.core.multiarray', 'numpy._core.multiarray'):
        names.append((scalar, f'{module}.scalar'))
    return names


def finish_download(path, downloaded, keep):
    """Remove a downloaded file once its teachers are installed (never a file of the --mirror folder)."""
    if downloaded and not keep and os.path.isfile(path):
        os.remove(path)


def record_checksums(save_root, sums):
    """Add the hashes seen to <save_root>/teachers/SHA256SUMS (sha256sum's format), to compare across machines."""
    if not sums:
        return
    path = os.path.join(save_root, 'teachers', 'SHA256SUMS')
    known = {}
    if os.path.isfile(path):
        with open(path) as f:
            for line in f:
                if '  ' in line:
                    digest, name = line.rstrip('\n').split('  ', 1)
                    known[name] = digest
    known.update({name: digest for name, digest in sums.items()})
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        f.writelines(f"{digest}  {name}\n" for name, digest in sorted(known.items()))


if __name__ == '__main__':
    run_cli(main)

"""Looking models up by name: construction, name checks with suggestions, and names parsed from paths."""
import difflib
import functools
import os
import re

import torch

from helper.errors import KDZooError
from . import model_dict, imagenet_model_dict

# Every known name. 'ResNet50' is in both zoos: RepDistiller's CIFAR bottleneck net and torchvision's.
ALL_MODELS = {**model_dict, **imagenet_model_dict}

# Other repos' names for a model of the zoo: (alias, the zoo's name). mdistiller's and RepDistiller's
# constructor for the CIFAR MobileNetV2 is ``mobile_half``. Runs record the zoo's name, so per-pair
# defaults, lr rules and save folders are those of the model the alias stands for.
ALIASES = {'mobile_half': 'MobileNetV2'}


def canonical_name(name):
    """The zoo's name for ``name`` (itself unless it is an alias)."""
    return ALIASES.get(name, name)


def zoo_for(dataset):
    """The models that fit a data set's image size: 224x224 ImageNet or the 32x32 ones."""
    return imagenet_model_dict if dataset == 'imagenet' else model_dict


def check_model_name(name, dataset='cifar100', flag='--model'):
    """The zoo's name for ``name`` (aliases resolved); a one-line error for an unknown architecture,
    suggesting the closest known names."""
    name = canonical_name(name)
    zoo = zoo_for(dataset)
    if name in zoo:
        return name
    if name in ALL_MODELS:
        other = 'ImageNet' if dataset != 'imagenet' else '32x32 (CIFAR-size)'
        raise KDZooError(f"model '{name}' is an {other} architecture and does not fit --dataset {dataset}; "
                         f"pick one of `python tools/eval.py --list-models --dataset {dataset}`")
    close = difflib.get_close_matches(name, list(zoo), n=3, cutoff=0.5)
    hint = (f"did you mean {', '.join(close)}?" if close
            else f"see `python tools/eval.py --list-models --dataset {dataset}`")
    raise KDZooError(f"unknown model '{name}' for {flag}; {hint}")


def build_model(name, num_classes, dataset='cifar100', flag='--model'):
    return zoo_for(dataset)[check_model_name(name, dataset, flag)](num_classes=num_classes)


def model_name_from_path(path):
    """The architecture a checkpoint path names, as the SimKD repo parses it, or None.

    ``.../S:<student>_T:<teacher>_.../x.pth`` (``~`` for ``:`` on Windows) names the student that was
    trained there. Otherwise the parent folder starts with the architecture (``resnet32x4_vanilla``).
    RepDistiller takes the first ``_``-separated token (three for ``wrn``); here the longest registered
    name that prefixes the folder wins, which agrees with that rule on all its names and also reads
    names that contain ``_`` themselves (``MobileNetV2_1_0_vanilla``).
    """
    folder = os.path.basename(os.path.dirname(os.path.abspath(path)))
    match = re.match(r'S[:~](.+?)_T[:~]', folder)
    if match:
        return canonical_name(match.group(1))
    candidates = [n for n in [*ALL_MODELS, *ALIASES] if folder == n or folder.startswith(n + '_')]
    return canonical_name(max(candidates, key=len)) if candidates else None


def guess_architectures(state_dict):
    """Names of registered models whose parameters have exactly these names and shapes (any class count)."""
    want = {k: tuple(v.shape) for k, v in state_dict.items() if torch.is_tensor(v)}
    num_classes = _classifier_rows(want)
    matches = []
    for zoo in ('cifar', 'imagenet'):
        for name in (model_dict if zoo == 'cifar' else imagenet_model_dict):
            if name in ALIASES:
                continue  # the same network under its zoo name
            if _layout(zoo, name, num_classes) == want and name not in matches:
                matches.append(name)
    return matches


@functools.lru_cache(maxsize=None)
def _layout(zoo, name, num_classes):
    """Parameter names and shapes of a model, built once per class count (an error message may ask for all
    48 models, some with 90M parameters)."""
    ctor = (model_dict if zoo == 'cifar' else imagenet_model_dict)[name]
    with torch.device('meta'):  # shapes only: no memory, no initialisation cost
        try:
            model = ctor(num_classes=num_classes)
        except Exception:  # a constructor that cannot take this class count is simply not a match
            return None
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _classifier_rows(shapes):
    """Class count read off the last 2-D weight (the classifier) of a state dict."""
    two_d = [s for k, s in shapes.items() if k.endswith('weight') and len(s) == 2]
    return two_d[-1][0] if two_d else 100

"""The pieces several methods share: the one-to-one map check (AB, FSP), the init-stage-only modules (AB, FT,
SSKD), the mixin that adds a CRD term (crd, norm_crd) and mdistiller's temperature/warm-up flags."""
import argparse

import pytest
import torch

from distiller_zoo import build_distiller
from distiller_zoo.flags import add_method_arguments, add_ramp_arguments, settle_ramp
from helper.errors import KDZooError
from models import model_dict


def nets(student, teacher):
    torch.manual_seed(0)
    return model_dict[student](num_classes=10), model_dict[teacher](num_classes=10)


@pytest.mark.parametrize('method, advice', [('abound', 'same number of stages'),
                                            ('fsp', 'same family and widths')])
def test_map_pairing_methods_refuse_networks_of_different_depth(method, advice):
    student, teacher = nets('resnet8', 'vgg8')  # 3 stage maps against VGG's 4
    with pytest.raises(KDZooError, match=rf"pairs the student's feature maps with the teacher's one to one, but "
                                         rf"the student has \d and the teacher \d; .*{advice}"):
        build_distiller(method, student, teacher)


@pytest.mark.parametrize('method, frozen, trained', [('abound', 'connector', []),
                                                     ('factor', 'paraphraser', ['translator']),
                                                     ('sskd', 't_head', ['s_head'])])
def test_init_stage_modules_stay_in_eval_and_out_of_the_main_optimiser(method, frozen, trained):
    student, teacher = nets('resnet8', 'resnet20')
    distiller = build_distiller(method, student, teacher)
    distiller.train()
    assert not getattr(distiller, frozen).training
    assert all(m.training for name, m in distiller.named_children() if name != frozen)
    assert distiller.trainable_modules() == [getattr(distiller, name) for name in trained]
    distiller.eval()
    assert not any(m.training for m in distiller.modules())


def test_a_method_without_init_stage_modules_trains_itself_when_it_has_parameters():
    student, teacher = nets('resnet8', 'resnet20')
    fitnet = build_distiller('hint', student, teacher)
    assert fitnet.trainable_modules() == [fitnet]
    assert build_distiller('kd', student, teacher).trainable_modules() == []


@pytest.mark.parametrize('method', ['crd', 'norm_crd'])
def test_the_crd_term_asks_the_loaders_for_contrast_rows_and_builds_its_loss_on_the_pooled_features(method):
    student, teacher = nets('resnet8', 'resnet20')
    distiller = build_distiller(method, student, teacher, num_train=32, nce_k=8, feat_dim=16)
    args = argparse.Namespace(nce_k=8, mode='relax')
    spec = type(distiller).data_options(args)['train_sample']
    assert (spec.k, spec.mode) == (8, 'relax')
    # the embeddings read the pooled widths of both networks (64 for both of these)
    assert distiller.criterion.embed_s.linear.in_features == 64
    assert distiller.criterion.embed_t.linear.in_features == 64
    assert {'nce_k', 'feat_dim'} <= set(type(distiller).flag_dests(add_method_arguments(argparse.ArgumentParser())))


@pytest.mark.parametrize('dataset, expected', [('cifar100', (4.0, 20)), ('imagenet', (1.0, 1))])
def test_ramp_flags_fill_mdistillers_values_per_data_set_and_keep_given_ones(dataset, expected):
    parser = argparse.ArgumentParser()
    add_ramp_arguments(parser, 'dkd', 'DKD')
    add_ramp_arguments(parser, 'reviewkd', 'review loss', temperature=False)
    args = parser.parse_args([])
    args.dataset = dataset
    settle_ramp(args, 'dkd')
    settle_ramp(args, 'reviewkd', temperature=False)
    assert (args.dkd_T, args.dkd_warmup, args.reviewkd_warmup) == (*expected, expected[1])
    assert not hasattr(args, 'reviewkd_T')
    given = parser.parse_args(['--dkd_T', '2.5', '--dkd_warmup', '0'])
    given.dataset = dataset
    settle_ramp(given, 'dkd')
    assert (given.dkd_T, given.dkd_warmup) == (2.5, 0)


@pytest.mark.parametrize('flags, message', [(['--mkl_T', '0'], '--mkl_T must be positive, got 0$'),
                                            (['--mkl_warmup', '-3'], '--mkl_warmup cannot be negative, got -3$')])
def test_ramp_flags_refuse_impossible_values(flags, message):
    parser = argparse.ArgumentParser()
    add_ramp_arguments(parser, 'mkl', 'MKL')
    args = parser.parse_args(flags)
    args.dataset = 'cifar100'
    with pytest.raises(KDZooError, match=message):
        settle_ramp(args, 'mkl')

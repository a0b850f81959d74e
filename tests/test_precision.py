"""helper.precision: the one place the losses widen half inputs and leave autocast."""
import torch

from helper.precision import at_least_fp32, full_precision


def test_at_least_fp32_widens_half_types_and_keeps_wider_ones():
    assert at_least_fp32(torch.ones(2, dtype=torch.bfloat16)).dtype == torch.float32
    assert at_least_fp32(torch.ones(2, dtype=torch.float16)).dtype == torch.float32
    wide = torch.ones(2, dtype=torch.float64)
    assert at_least_fp32(wide).dtype == torch.float64
    exact = torch.ones(2)
    assert at_least_fp32(exact) is exact  # nothing copied when nothing changes


def test_full_precision_runs_outside_autocast_on_widened_tensors():
    seen = {}

    @full_precision
    def loss(a, b, scale, maps):
        seen['dtypes'] = (a.dtype, b.dtype, maps[0].dtype)
        seen['autocast'] = torch.is_autocast_enabled('cpu')
        return scale * (a @ b).sum()

    a = torch.randn(3, 4, dtype=torch.bfloat16)
    b = torch.randn(4, 2, dtype=torch.bfloat16)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        narrowed = (a.float() @ b.float()).dtype  # what autocast does to a matmul of fp32 inputs
        value = loss(a, b, 2.0, [a])
    assert narrowed == torch.bfloat16
    # Tensors are widened, other arguments (numbers, lists) passed as they are; autocast is off inside.
    assert seen == {'dtypes': (torch.float32, torch.float32, torch.bfloat16), 'autocast': False}
    assert value.dtype == torch.float32
    torch.testing.assert_close(value, 2.0 * (a.float() @ b.float()).sum())


def test_full_precision_keeps_gradients_to_half_inputs():
    a = torch.randn(5, dtype=torch.bfloat16, requires_grad=True)
    full_precision(lambda x: x.pow(2).sum())(a).backward()
    assert a.grad.dtype == torch.bfloat16
    torch.testing.assert_close(a.grad, (2 * a.detach().float()).bfloat16())

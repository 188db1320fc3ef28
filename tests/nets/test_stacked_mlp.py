"""The stacked (batched over components) MLPs against the same weights applied one component at a
time, for any leading shape and any subset of components."""

import pytest
import torch
import torch.nn.functional as F

from pyro_mcvae.nets.mlp import ComponentNets, StackedLinear, StackedMLP


def _one_at_a_time(net: StackedMLP, x: torch.Tensor, components) -> torch.Tensor:
    """``x (..., K, in)``: each requested component through its own weights, a plain loop."""
    outs = []
    for j, k in enumerate(components):
        h = x[..., j, :]
        for i, layer in enumerate(net.layers):
            h = h @ layer.weight[k] + layer.bias[k]
            if i < len(net.layers) - 1:
                h = F.silu(h)
        outs.append(h)
    return torch.stack(outs, dim=-2)


@pytest.mark.parametrize("lead", [(), (7,), (3, 4)])
@pytest.mark.parametrize("components", [None, [2], [3, 0]])
def test_stacked_mlp_equals_one_component_at_a_time(lead, components):
    torch.manual_seed(0)
    net = StackedMLP(4, 5, (8, 6), 3).double()
    comps = list(range(4)) if components is None else components
    x = torch.randn(*lead, len(comps), 5, dtype=torch.float64)
    got = net(x, components)
    assert got.shape == (*lead, len(comps), 3)
    torch.testing.assert_close(got, _one_at_a_time(net, x, comps), rtol=1e-12, atol=1e-12)


def test_stacked_linear_gradients_equal_the_loop():
    torch.manual_seed(1)
    lin = StackedLinear(3, 4, 2).double()
    x = torch.randn(5, 3, 4, dtype=torch.float64)
    (lin(x) ** 2).sum().backward()
    got = [lin.weight.grad.clone(), lin.bias.grad.clone()]
    lin.zero_grad()
    ref = torch.stack([x[:, k] @ lin.weight[k] + lin.bias[k] for k in range(3)], dim=1)
    (ref ** 2).sum().backward()
    torch.testing.assert_close(got[0], lin.weight.grad)
    torch.testing.assert_close(got[1], lin.bias.grad)


@pytest.mark.parametrize("lead", [(6,), (2, 6)])
def test_component_nets_list_interface(lead):
    torch.manual_seed(2)
    nets = ComponentNets([5, 5, 5], (8,), [4, 4, 4])
    assert nets.stacked
    xs = [torch.randn(*lead, 5) for _ in range(3)]
    outs = nets(xs)
    ref = _one_at_a_time(nets.net, torch.stack(xs, dim=-2), [0, 1, 2])
    assert len(outs) == 3
    for k in range(3):
        assert outs[k].shape == (*lead, 4)
        torch.testing.assert_close(outs[k], ref[..., k, :])
    sub = nets([xs[2], xs[0]], [2, 0])
    torch.testing.assert_close(sub[0], outs[2])
    torch.testing.assert_close(sub[1], outs[0])

"""Tests for the image networks (``pyro_mcvae.nets.resnet``) and the masked off-diagonal option.

The networks are built narrow (``width=4``) so that the whole module runs in a few seconds; the
architecture does not depend on the width.
"""

import math

import pytest
import torch
from torch import nn

from pyro_mcvae.covariance import assemble_block_covariance, num_offdiag_pairs
from pyro_mcvae.nets.mlp import ComponentNets, GlobalOffdiagNet, MLPNets
from pyro_mcvae.nets.resnet import (
    ImageComponentNets,
    ImageOffdiagNet,
    ResNetNets,
    StackedConv2d,
    StackedImageDecoder,
    StackedImageEncoder,
)

M, D_IMG, SHAPE = 5, 3 * 28 * 28, (3, 28, 28)
SMALL = dict(width=4)
OFF_SMALL = dict(width=4, feature_dim=8, hidden=(16,))


def images(*lead, m=M, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(*lead, D_IMG, generator=g) for _ in range(m)]


def randomise_last_layer(net, std=0.5, seed=0):
    """Give the zero-initialised last layer of an off-diagonal network random weights."""
    head = net.head if isinstance(net, ImageOffdiagNet) else net
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        last = head.net[-1]
        last.weight.copy_(torch.randn(last.weight.shape, generator=g) * std)
        last.bias.copy_(torch.randn(last.bias.shape, generator=g) * std)


# ---------------------------------------------------------------------------------------------
# Component networks: shapes, grouped == per-component, gradients
# ---------------------------------------------------------------------------------------------
def test_shapes_with_several_leading_dims():
    torch.manual_seed(0)
    enc = ImageComponentNets([D_IMG] * M, [6] * M, "encoder", **SMALL)
    dec = ImageComponentNets([3] * M, [D_IMG] * M, "decoder", **SMALL)
    codes = enc(images(2, 3))
    assert len(codes) == M and all(c.shape == (2, 3, 6) for c in codes)
    recs = dec([torch.randn(4, 2, 3, 3) for _ in range(2)], components=[4, 0])
    assert len(recs) == 2 and all(r.shape == (4, 2, 3, D_IMG) for r in recs)
    assert enc(images(m=M))[0].shape == (6,)  # no leading dim at all


def test_different_sizes_fall_back_to_one_stack_per_component():
    torch.manual_seed(0)
    enc = ImageComponentNets([D_IMG] * 3, [2, 4, 6], "encoder", **SMALL)
    assert not enc.stacked
    outs = enc(images(2, 5, m=2), components=[2, 0])
    assert [o.shape for o in outs] == [(2, 5, 6), (2, 5, 2)]


def test_stacked_conv_equals_one_conv2d_per_component():
    torch.manual_seed(0)
    conv = StackedConv2d(M, 3, 4, 3, padding=1)
    x = torch.randn(2, M * 3, 9, 9)
    out = conv(x)
    for k in range(M):
        ref = nn.Conv2d(3, 4, 3, padding=1)
        with torch.no_grad():
            ref.weight.copy_(conv.weight[k])
            ref.bias.copy_(conv.bias[k])
        torch.testing.assert_close(out[:, 4 * k:4 * (k + 1)], ref(x[:, 3 * k:3 * (k + 1)]),
                                   rtol=1e-5, atol=1e-5)
    sub = conv(torch.cat([x[:, 9:12], x[:, 0:3]], dim=1), components=[3, 0])
    torch.testing.assert_close(sub, torch.cat([out[:, 12:16], out[:, 0:4]], dim=1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("role", ["encoder", "decoder"])
@pytest.mark.parametrize("components", [None, [4], [0, 3, 4, 1]])
def test_grouped_equals_per_component_networks(role, components):
    torch.manual_seed(1)
    latent = 3
    if role == "encoder":
        nets = ImageComponentNets([D_IMG] * M, [2 * latent] * M, role, **SMALL)
        comps = list(range(M)) if components is None else components
        xs = images(2, 3, m=len(comps), seed=2)
        as_single = [x.reshape(-1, 1, *SHAPE) for x in xs]
    else:
        nets = ImageComponentNets([latent] * M, [D_IMG] * M, role, **SMALL)
        comps = list(range(M)) if components is None else components
        xs = [torch.randn(2, 3, latent) for _ in comps]
        as_single = [x.reshape(-1, 1, latent) for x in xs]
    grouped = nets(xs, components)
    singles = nets.per_component()
    for k, out, x1 in zip(comps, grouped, as_single):
        ref = singles[k](x1).reshape(out.shape)
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    nets.grouped = False  # the loop mode on the same parameters
    for out, ref in zip(grouped, nets(xs, components)):
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_per_component_networks_copy_the_weights():
    torch.manual_seed(0)
    enc = StackedImageEncoder(M, SHAPE, 4, **SMALL)
    single = enc.select([2])
    assert single.num_components == 1
    for (name, p), (name1, p1) in zip(enc.named_parameters(), single.named_parameters()):
        assert name == name1 and p1.shape == (1, *p.shape[1:])
        assert torch.equal(p1[0], p[2]) and p1.data_ptr() != p.data_ptr()


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    latent = 2
    enc = ImageComponentNets([D_IMG] * M, [2 * latent] * M, "encoder", **SMALL)
    dec = ImageComponentNets([latent] * M, [D_IMG] * M, "decoder", **SMALL)
    xs = images(3)
    logits = dec([c[..., :latent] for c in enc(xs)])
    sum(nn.functional.binary_cross_entropy_with_logits(lg, x) for lg, x in zip(logits, xs)).backward()
    for net in (enc, dec):
        for name, p in net.named_parameters():
            assert p.grad is not None, name
            # every component's slice of every stacked parameter gets a gradient
            assert (p.grad.flatten(1).abs().amax(dim=1) > 0).all(), name


def test_decoder_has_no_final_activation():
    torch.manual_seed(0)
    dec = StackedImageDecoder(2, 3, SHAPE, **SMALL)
    with torch.no_grad():
        dec.out.bias.fill_(-5.0)  # logits far below zero must stay below zero
    out = dec(torch.zeros(4, 2, 3))
    assert out.shape == (4, 2, *SHAPE) and (out < 0).any()


# ---------------------------------------------------------------------------------------------
# The off-diagonal networks
# ---------------------------------------------------------------------------------------------
def test_image_offdiag_starts_at_zero_and_fills_upper_blocks_only():
    torch.manual_seed(0)
    d = 2
    net = ImageOffdiagNet([D_IMG] * M, d, **OFF_SMALL)
    xs = images(2, 3)
    out = net(xs)
    assert out.shape == (2, 3, M, M, d, d)
    assert torch.equal(out, torch.zeros_like(out))
    randomise_last_layer(net)
    out = net(xs)
    upper = torch.ones(M, M, dtype=torch.bool).triu(1)[..., None, None].expand(M, M, d, d)
    assert (out[..., ~upper] == 0).all()
    assert (out[..., upper] != 0).all()
    assert torch.equal(net.entry_mask(), upper)


def test_image_offdiag_gradients_reach_every_parameter():
    torch.manual_seed(0)
    net = ImageOffdiagNet([D_IMG] * M, 2, **OFF_SMALL)
    # at initialisation the last layer is zero, so only it gets a nonzero gradient
    (net(images(3)) - 1.0).square().sum().backward()
    last = net.head.net[-1]
    assert last.weight.grad.abs().max() > 0 and last.bias.grad.abs().max() > 0
    assert all(p.grad is not None for p in net.parameters())
    net.zero_grad()
    randomise_last_layer(net)
    (net(images(3)) - 1.0).square().sum().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().max() > 0, name


@pytest.mark.parametrize("kind", ["mlp", "image"])
def test_masked_offdiag_keeps_exact_count_and_stays_zero_after_training(kind):
    torch.manual_seed(0)
    d, keep = 3, 0.25
    count = num_offdiag_pairs(M) * d * d  # 90
    if kind == "mlp":
        dims = [4, 5, 6, 7, 8]
        net = GlobalOffdiagNet(dims, d, (16,), keep_fraction=keep, mask_seed=7)
        full = GlobalOffdiagNet(dims, d, (16,))
        xs = [torch.randn(8, k) for k in dims]
    else:
        dims = [D_IMG] * M
        net = ImageOffdiagNet(dims, d, keep_fraction=keep, mask_seed=7, **OFF_SMALL)
        full = ImageOffdiagNet(dims, d, **OFF_SMALL)
        xs = images(8)
    kept = round(keep * count)
    assert int(net.offdiag_mask.sum()) == kept and net.offdiag_mask.shape == (count // (d * d), d, d)
    assert int(net.entry_mask().sum()) == kept
    # the masked entries have no weights at all: (count - kept) * (last input width + 1) fewer
    n_params = sum(p.numel() for p in net.parameters())
    n_full = sum(p.numel() for p in full.parameters())
    assert n_full - n_params == (count - kept) * (16 + 1)

    target = torch.randn(8, M, M, d, d)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(2):
        opt.zero_grad()
        out = net(xs)
        (out - target).square().sum().backward()
        last = (net.head if kind == "image" else net).net[-1]
        assert last.weight.grad.abs().min() > 0  # every kept entry is trained
        opt.step()
    out = net(xs)
    entries = net.entry_mask()
    assert (out[..., ~entries] == 0).all()
    assert (out[..., entries] != 0).all()


def test_mask_is_seeded_and_saved_in_state_dict():
    d = 2
    a = GlobalOffdiagNet([3] * M, d, (8,), keep_fraction=0.25, mask_seed=3)
    b = GlobalOffdiagNet([3] * M, d, (8,), keep_fraction=0.25, mask_seed=3)
    c = GlobalOffdiagNet([3] * M, d, (8,), keep_fraction=0.25, mask_seed=4)
    assert torch.equal(a.offdiag_mask, b.offdiag_mask)
    assert not torch.equal(a.offdiag_mask, c.offdiag_mask)
    assert "offdiag_mask" in a.state_dict()
    randomise_last_layer(a)
    c.load_state_dict(a.state_dict())  # the checkpoint's mask replaces c's, outputs follow it
    assert torch.equal(c.offdiag_mask, a.offdiag_mask)
    xs = [torch.randn(4, 3) for _ in range(M)]
    torch.testing.assert_close(c(xs), a(xs))

    img = ImageOffdiagNet([D_IMG] * M, d, keep_fraction=0.25, mask_seed=3, **OFF_SMALL)
    assert torch.equal(img.state_dict()["head.offdiag_mask"], a.offdiag_mask)
    # nothing masked: no mask buffer, the state_dict keys of the unmasked network are unchanged
    plain = GlobalOffdiagNet([3] * M, d, (8,))
    assert plain.offdiag_mask is None
    assert list(plain.state_dict()) == ["net.0.weight", "net.0.bias", "net.2.weight", "net.2.bias"]


@pytest.mark.parametrize("bad", [0.0, -0.25, 1.5, float("nan"), True, "0.5"])
def test_keep_fraction_is_validated(bad):
    with pytest.raises(ValueError, match="keep_fraction"):
        GlobalOffdiagNet([3] * M, 2, (8,), keep_fraction=bad)
    with pytest.raises(ValueError, match="keep_fraction"):
        ImageOffdiagNet([D_IMG] * M, 2, keep_fraction=bad, **OFF_SMALL)


def test_keep_fraction_that_keeps_nothing_is_refused():
    with pytest.raises(ValueError, match="keeps round"):
        GlobalOffdiagNet([3, 3], 1, (8,), keep_fraction=0.25)  # round(0.25 * 1) = 0


@pytest.mark.parametrize("mode", ["blockwise", "elementwise"])
def test_covariance_from_masked_blocks_is_spd(mode):
    torch.manual_seed(0)
    d = 3
    net = ImageOffdiagNet([D_IMG] * M, d, keep_fraction=0.25, mask_seed=1, **OFF_SMALL)
    randomise_last_layer(net, std=20.0)  # strong coupling: the block scaling must act
    offdiag = net(images(6)).detach().double()
    assert offdiag.abs().max() > 1.0
    var = torch.rand(6, M, d, dtype=torch.float64) + 1e-3
    cov = assemble_block_covariance(var, offdiag, mode=mode)
    torch.testing.assert_close(cov, cov.transpose(-1, -2))
    assert (torch.linalg.eigvalsh(cov) > 0).all()
    torch.linalg.cholesky(cov)
    # the masked entries stay zero in the assembled matrix (mirrored below the diagonal)
    blocks = cov.reshape(6, M, d, M, d).transpose(-3, -2)
    upper = net.entry_mask().double()
    allowed = upper + upper.transpose(0, 1).transpose(-1, -2) + torch.eye(M)[..., None, None]
    assert (blocks[..., allowed == 0] == 0).all()


# ---------------------------------------------------------------------------------------------
# Factories and errors
# ---------------------------------------------------------------------------------------------
def test_factories_build_both_kinds():
    mlp = MLPNets(hidden=(8,), global_hidden=(4,))
    enc = mlp.component_nets([3, 4], [2, 2], "encoder")
    assert isinstance(enc, ComponentNets)
    off = mlp.offdiag_net([3, 4, 5], 2, keep_fraction=0.5, mask_seed=1)
    assert isinstance(off, GlobalOffdiagNet) and off.net[0].out_features == 4
    assert int(off.offdiag_mask.sum()) == round(0.5 * 3 * 4)

    res = ResNetNets(width=4, offdiag_width=4, offdiag_features=8, offdiag_hidden=(16,))
    enc = res.component_nets([D_IMG] * 2, [6] * 2, "encoder")
    dec = res.component_nets([3] * 2, [D_IMG] * 2, "decoder")
    assert isinstance(enc, ImageComponentNets) and isinstance(dec, ImageComponentNets)
    assert dec([torch.randn(2, 3)] * 2)[1].shape == (2, D_IMG)
    off = res.offdiag_net([D_IMG] * 3, 2, keep_fraction=0.5)
    assert isinstance(off, ImageOffdiagNet) and int(off.offdiag_mask.sum()) == 6
    for factory in (mlp, res):
        with pytest.raises(ValueError, match="role"):
            factory.component_nets([D_IMG], [2], "prior")


def test_wrong_image_size_gives_a_clear_error():
    res = ResNetNets(width=4)
    with pytest.raises(ValueError, match=r"encoder inputs must be flat images of size 3\*28\*28 = 2352"):
        res.component_nets([D_IMG, 784], [4, 4], "encoder")
    with pytest.raises(ValueError, match="decoder outputs must be flat images"):
        res.component_nets([4, 4], [D_IMG, 28 * 28], "decoder")
    with pytest.raises(ValueError, match="ImageOffdiagNet inputs must be flat images"):
        res.offdiag_net([784] * 3, 2)
    enc = res.component_nets([D_IMG] * 2, [4, 4], "encoder")
    with pytest.raises(ValueError, match=r"expected a tensor \(\.\.\., 2352\)"):
        enc([torch.rand(2, 784), torch.rand(2, 784)])
    with pytest.raises(ValueError, match="divisible by 2 \\*\\* levels"):
        ResNetNets(image_shape=(3, 30, 30))
    with pytest.raises(ValueError, match="image_shape"):
        ResNetNets(image_shape=(28, 28))


def test_other_image_shapes_and_levels():
    torch.manual_seed(0)
    shape = (1, 16, 8)
    res = ResNetNets(image_shape=shape, width=4, levels=3, offdiag_width=4, offdiag_features=8,
                     offdiag_hidden=(16,))
    size = math.prod(shape)
    enc = res.component_nets([size] * 2, [4] * 2, "encoder")
    dec = res.component_nets([2] * 2, [size] * 2, "decoder")
    x = [torch.rand(3, size) for _ in range(2)]
    assert dec([c[..., :2] for c in enc(x)])[0].shape == (3, size)
    assert res.offdiag_net([size] * 2, 2)(x).shape == (3, 2, 2, 2, 2)

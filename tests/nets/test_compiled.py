"""Compiled networks (``pyro_mcvae.nets.compiled``, ``TrainConfig(compile=...)``).

The fast tests compile with ``aot_eager``: Dynamo captures the networks' forward graphs inside
the Pyro programs and AOTAutograd derives their backward graphs, which is where compiling the
image models could break (the Pyro glue, the components lists, autocast); no code is generated,
so they take seconds. The ``slow`` test generates code with inductor (C++ on the CPU, about a
minute on two busy cores) and compares its loss and gradients with the eager step in float32.
"""

import copy

import pyro
import pytest
import torch
from torch._dynamo.utils import counters

from pyro_mcvae import TrainConfig, build_model, fit, load_model
from pyro_mcvae.infer import load_checkpoint
from pyro_mcvae.infer.objectives import objective_for
from pyro_mcvae.nets import MLPNets, ResNetNets
from pyro_mcvae.nets import compiled as compiled_module
from pyro_mcvae.nets.compiled import compile_networks, compile_unavailable, compiled_networks, uncompile_networks

M, SIZE = 3, 3 * 28 * 28
# The gpu preset's GMRF at a tiny size: standardised prior, masked global network, one
# subset-posterior term per datum on one given modality (encoders asked for single components).
GMRF = dict(block_dim=4, offdiag_keep=0.25, prior_standardized=True, prior_init_shared=2, subset_posteriors=1,
            subset_max_size=1, subset_per_example=True)
SETTINGS = {"gmrf": GMRF, "mmvaeplus": dict(shared_dim=4, private_dim=4)}


def tiny(name, nets):
    torch.manual_seed(0)
    return build_model(name, [SIZE] * M, hidden=nets, likelihood="laplace", scale=0.75, **SETTINGS[name])


def images(n=12, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(n, SIZE, generator=g) for _ in range(M)]


def loss_and_grads(model, xs, seed=5):
    """One step's loss and every parameter's gradient (the method's own objective, beta 1e-3)."""
    pyro.clear_param_store()
    for p in model.parameters():
        p.grad = None
    pyro.set_rng_seed(seed)
    loss = objective_for(model, model.default_objective).loss_and_grads(model.model, model.guide, xs, beta=1e-3)
    return loss, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_same_step(eager, compiled, xs, rtol):
    loss0, grads0 = loss_and_grads(eager, xs)
    loss1, grads1 = loss_and_grads(compiled, xs)
    assert loss1 == pytest.approx(loss0, rel=rtol)
    assert set(grads1) == set(grads0) and len(grads0) == len(list(eager.parameters()))
    for name, g0 in grads0.items():
        # relative to the tensor's largest entry: float32 sums in another order
        scale = g0.abs().max().clamp_min(1e-30)
        assert ((grads1[name] - g0).abs().max() / scale).item() < rtol, name


@pytest.mark.parametrize("name", ["gmrf", pytest.param("mmvaeplus", marks=pytest.mark.slow)])  # keep make test short
def test_captured_step_matches_eager_and_keeps_state_dict(name):
    """The networks' graphs are captured inside the Pyro step (forward and backward), the step
    computes what the eager one does, and the state dict and parameters are the model's own."""
    torch.set_num_threads(1)
    eager = tiny(name, ResNetNets(width=4))
    model = copy.deepcopy(eager)
    counters.clear()
    names = compile_networks(model, "aot_eager")
    expected = ["guide.encoder.nets", "decoder.nets"] + (["guide.global_net"] if name == "gmrf" else [])
    assert sorted(names) == sorted(expected)
    assert compiled_networks(model) == {n: "aot_eager" for n in names}
    xs = images()
    assert_same_step(eager, model, xs, rtol=1e-6)
    assert counters["stats"]["unique_graphs"] >= len(names)  # the compiled code ran
    assert list(model.state_dict()) == list(eager.state_dict())
    assert not any("_orig_mod" in key for key in model.state_dict())
    # Without gradients (evaluation) the eager forward runs: no new graph.
    graphs = counters["stats"]["unique_graphs"]
    with torch.no_grad():
        model.reconstruct([x[:3] for x in xs])
    assert counters["stats"]["unique_graphs"] == graphs
    # A copy is eager, and uncompiling restores the eager call.
    assert compiled_networks(copy.deepcopy(model)) == {}
    uncompile_networks(model)
    assert compiled_networks(model) == {}


def test_compiled_training_checkpoint_and_resume(tmp_path):
    """``fit`` with ``compile``: the same losses as the eager run, a checkpoint with the model's
    own keys that ``load_model`` rebuilds, and a resume without compiling (a runtime setting)."""
    torch.set_num_threads(1)
    xs = images(n=20)  # batch 8: two full batches and a last one of 4 (another shape)
    config = dict(epochs=2, batch_size=8, seed=3)
    eager = fit(tiny("gmrf", MLPNets((16,))), xs, TrainConfig(**config), progress=False)
    model = tiny("gmrf", MLPNets((16,)))
    run = tmp_path / "run"
    result = fit(model, xs, TrainConfig(**config, compile="aot_eager"), out_dir=run, progress=False)
    assert sorted(compiled_networks(model)) == ["decoder.nets", "guide.encoder.nets", "guide.global_net"]
    assert result.losses == pytest.approx(eager.losses, rel=1e-5)
    state = load_checkpoint(run / "checkpoint.pt")
    assert list(state["model"]) == list(tiny("gmrf", MLPNets((16,))).state_dict())
    assert state["config"]["compile"] == "aot_eager"
    loaded = load_model(run)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    # Two more epochs, eager, from the compiled run's checkpoint: allowed and the same numbers as
    # four eager epochs in one go.
    more = fit(tiny("gmrf", MLPNets((16,))), xs, TrainConfig(**(config | {"epochs": 4})), out_dir=run,
               progress=False)
    straight = fit(tiny("gmrf", MLPNets((16,))), xs, TrainConfig(**(config | {"epochs": 4})), progress=False)
    assert more.losses == pytest.approx(straight.losses, rel=1e-5)


def test_config_refuses_unknown_modes():
    with pytest.raises(ValueError, match="compile must be False, True or one of"):
        TrainConfig(compile="fastest")


def test_no_code_generator_warns_and_stays_eager(monkeypatch):
    """Without a C++ compiler the CPU code generator cannot run: a warning names it and the
    model stays eager (aot_eager needs none)."""
    monkeypatch.setattr(compiled_module.shutil, "which", lambda name: None)
    monkeypatch.delenv("CXX", raising=False)
    assert "no C++ compiler" in compile_unavailable("cpu")
    assert compile_unavailable("cpu", "aot_eager") is None
    model = tiny("gmrf", MLPNets((8,)))
    with pytest.warns(RuntimeWarning, match="training eagerly, without torch.compile: no C\\+\\+ compiler"):
        assert compile_networks(model, True) == []
    assert compiled_networks(model) == {}


@pytest.mark.slow
@pytest.mark.skipif(compile_unavailable("cpu") is not None, reason="no code generator for the CPU")
def test_inductor_step_matches_eager_in_float32():
    """Inductor's generated code (fused elementwise kernels, its own reductions) gives the eager
    step's loss and gradients to float32 rounding."""
    torch.set_num_threads(1)
    eager = tiny("gmrf", MLPNets((16,)))
    model = copy.deepcopy(eager)
    compile_networks(model, True)
    assert_same_step(eager, model, images(), rtol=2e-5)

"""The warm-up schedule alone (its windows as documented in ``pyro_mcvae/mcmc/schedule.py``), and
the kernel following it: the mass moves only in the mass window, the step size and trajectory
only during the warm-up, draws are recorded only after it."""

import pytest
import torch

from pyro_mcvae.mcmc import PersistentHMC, WarmupSchedule


@pytest.mark.parametrize("schedule,windows", [
    (WarmupSchedule(0, 100), [("mass", 1, 75), ("step", 76, 100)]),
    (WarmupSchedule(0, 20), [("mass", 1, 15), ("step", 16, 20)]),
    (WarmupSchedule(0, 19), [("step", 1, 19)]),  # too short for a mass
    (WarmupSchedule(0, 100, adapt_mass=False), [("step", 1, 100)]),
    (WarmupSchedule(400, 200), [("mass", 401, 550), ("step", 551, 600)]),  # a restart after 400
    (WarmupSchedule(7, 0), []),
])
def test_windows(schedule, windows):
    assert schedule.windows() == windows
    warm = [t for t in range(schedule.start + 250) if schedule.warming(t)]
    assert warm == list(range(schedule.start + 1, schedule.end + 1))
    mass_window = [(first, last) for name, first, last in windows if name == "mass"]
    mass = [t for t in range(schedule.start + 250) if schedule.sets_mass(t)]
    assert mass == [t for first, last in mass_window for t in range(first, last + 1)]
    assert [t for t in range(700) if schedule.mass_is_final(t)] == [last for _, last in mass_window]
    assert [t for t in range(700) if schedule.ends(t)] == ([schedule.end] if windows else [])


def test_a_negative_window_is_refused():
    with pytest.raises(ValueError, match="length >= 0"):
        WarmupSchedule(0, -1)


def test_the_kernel_adapts_in_the_windows_of_its_schedule():
    """40 warm-up transitions (mass 1-30, step 31-40), then a restart after 50 with 24 (mass 51-68,
    step 69-74): the mass changes exactly in the mass windows, the step size only in the warm-ups,
    and draws are recorded from 41 and 75 on."""
    torch.manual_seed(0)
    scales = torch.tensor([0.5, 1.0, 3.0], dtype=torch.float64)
    hmc = PersistentHMC(lambda z: 0.5 * (z / scales).pow(2).sum(-1), torch.randn(16, 3, dtype=torch.float64),
                        step_size=0.3, num_steps=4, warmup=40, keep=100)
    mass_moved, step_moved, recorded = [], [], []
    for t in range(1, 86):
        if t == 51:
            hmc.restart_warmup(24, clear=False)
            assert hmc.schedule.windows() == [("mass", 51, 68), ("step", 69, 74)]
        mass, step, draws = hmc.inv_mass.clone(), hmc.step_size, hmc.draws_per_chain
        hmc.step(1)
        assert hmc.transitions == t
        if not torch.equal(hmc.inv_mass, mass):
            mass_moved.append(t)
        if hmc.step_size != step:
            step_moved.append(t)
        if hmc.draws_per_chain > draws:
            recorded.append(t)
    assert mass_moved == list(range(1, 31)) + list(range(51, 69))
    assert step_moved == list(range(1, 41)) + list(range(51, 75))
    assert recorded == list(range(41, 51)) + list(range(75, 86))

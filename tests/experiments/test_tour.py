"""The 10-minute tour runs end to end (its fast version), so it cannot go stale; its saved
chain loads back with ArviZ alone."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_tour_runs_and_its_chain_loads(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "tour.py"), "--fast", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    for step in ("1. copula data", "2. GMRF trained", "3. generation", "4. MMVAE trained", "5. GMRF: log p(x)",
                 "5. MMVAE: log p(x)", "6. NN-MRF chains saved"):
        assert step in proc.stdout, proc.stdout
    import arviz as az

    idata = az.from_netcdf(tmp_path / "nnmrf" / "chains.nc")
    assert set(idata.groups()) >= {"posterior", "sample_stats"}
    assert {"z", "energy", "sqnorm"} <= set(idata.posterior.data_vars)
    assert {"lp", "acceptance_rate", "diverging"} <= set(idata.sample_stats.data_vars)
    assert idata.posterior["z"].shape[-1] == 8  # four components of two latents
    summary = az.summary(idata, var_names=["energy"])
    assert 0.9 < float(summary["r_hat"].iloc[0]) < 2.0

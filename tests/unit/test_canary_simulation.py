"""Spec statistics.md section 4: the canary simulation, all six assertions, with fixed seeds.

Errors e_A = c + 0.5 eps_A (champion) and e_B = c + s_B eps_B (candidate), c and eps ~ N(0, 1); also
c ~ t3/sqrt(3) and an unpaired variant (independent requests per arm). 2,000 canaries, a look every 100
labels up to 20,000, promotion only at n >= 1,000, rollback only at n >= 200. tau, tau_harm and the
winsorizing bounds are fixed beforehand from a separate shadow sample, as in production, and the decisions
are made by the library's own vectorised rule (``sequential_outcomes``), which ``test_canary_msprt`` proves
equal to the look-by-look guard.

Vectorised: per block of 100 canaries the 20,000 labels are drawn at once, reduced to per-look sums and sums
of squares, and accumulated over looks; common random numbers serve all values of s_B.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest

from evolution.stats.canary import GuardConfig, expected_labels, guard_config_from_shadow
from evolution.stats.msprt import PROMOTE, ROLLBACK, sequential_outcomes

RUNS = 2000
N_MAX = 20_000
LOOK = 100
LOOKS = N_MAX // LOOK
BLOCK = 100  # canaries per draw: bounds memory to a few arrays of 100 x 20,000 floats
NS = np.arange(1, LOOKS + 1) * LOOK
Z95 = 1.6448536269514722
PAIRED_S = (0.5, 0.45, 0.40, 0.60)
UNPAIRED_S = (0.5, 0.40)


def _common_errors(rng: np.random.Generator, shape: tuple[int, ...], heavy: bool) -> np.ndarray:
    if heavy:
        return rng.standard_t(3, size=shape) / math.sqrt(3.0)
    return rng.standard_normal(shape)


def _per_look(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative mean and variance (ddof=1) at every look, for each canary."""
    blocks = x.reshape(x.shape[0], LOOKS, LOOK)
    s1 = np.cumsum(blocks.sum(axis=2), axis=1)
    s2 = np.cumsum(np.einsum("ijk,ijk->ij", blocks, blocks), axis=1)
    mean = s1 / NS
    var = (s2 - s1 * mean) / (NS - 1)
    return mean, var


def _shadow_config(paired: bool, seed: int, n: int = 5000) -> GuardConfig:
    rng = np.random.default_rng(seed)
    c = rng.standard_normal(n)
    a = np.abs(c + 0.5 * rng.standard_normal(n))
    b = np.abs(c + 0.5 * rng.standard_normal(n))
    if paired:
        return guard_config_from_shadow(a - b)
    return guard_config_from_shadow(None, paired=False, champion_abs_err=a, candidate_abs_err=b)


def _rates(theta: np.ndarray, v: np.ndarray, cfg: GuardConfig) -> dict[str, float]:
    out = sequential_outcomes(
        NS,
        theta,
        v,
        tau=cfg.tau,
        tau_harm=cfg.tau_harm,
        alpha=cfg.alpha,
        min_promote_n=cfg.min_promote_n,
        min_rollback_n=cfg.min_rollback_n,
        n_max=cfg.n_max,
    )
    return {
        "promote": float(np.mean(out.action == PROMOTE)),
        "rollback": float(np.mean(out.action == ROLLBACK)),
    }


@functools.cache
def paired_results(heavy: bool) -> dict[str, dict[str, float]]:
    cfg = _shadow_config(paired=True, seed=101)
    rng = np.random.default_rng(202 if heavy else 201)
    svals = (0.5,) if heavy else PAIRED_S
    theta = {s: np.empty((RUNS, LOOKS)) for s in svals}
    v = {s: np.empty((RUNS, LOOKS)) for s in svals}
    naive = np.zeros(RUNS, dtype=bool)
    for lo in range(0, RUNS, BLOCK):
        shape = (BLOCK, N_MAX)
        c = _common_errors(rng, shape, heavy)
        a = np.abs(c + 0.5 * rng.standard_normal(shape))
        eps_b = rng.standard_normal(shape)
        for s in svals:
            d = np.clip(a - np.abs(c + s * eps_b), cfg.winsor_low, cfg.winsor_high)
            mean, var = _per_look(d)
            theta[s][lo : lo + BLOCK] = mean
            v[s][lo : lo + BLOCK] = var / NS
            if s == 0.5:
                z = mean / np.sqrt(var / NS)
                naive[lo : lo + BLOCK] = ((cfg.min_promote_n <= NS) & (z > Z95)).any(axis=1)
    results = {str(s): _rates(theta[s], v[s], cfg) for s in svals}
    results["naive"] = {"promote": float(naive.mean()), "rollback": 0.0}
    return results


@functools.cache
def unpaired_results() -> dict[str, dict[str, float]]:
    cfg = _shadow_config(paired=False, seed=102)
    rng = np.random.default_rng(203)
    theta = {s: np.empty((RUNS, LOOKS)) for s in UNPAIRED_S}
    v = {s: np.empty((RUNS, LOOKS)) for s in UNPAIRED_S}
    for lo in range(0, RUNS, BLOCK):
        shape = (BLOCK, N_MAX)  # N_MAX labels per arm, from different requests
        a = np.abs(rng.standard_normal(shape) + 0.5 * rng.standard_normal(shape))
        a = np.clip(a, cfg.winsor_low, cfg.winsor_high)
        mean_a, var_a = _per_look(a)
        c_b = rng.standard_normal(shape)
        eps_b = rng.standard_normal(shape)
        for s in UNPAIRED_S:
            b = np.clip(np.abs(c_b + s * eps_b), cfg.winsor_low, cfg.winsor_high)
            mean_b, var_b = _per_look(b)
            theta[s][lo : lo + BLOCK] = mean_a - mean_b
            v[s][lo : lo + BLOCK] = (var_a + var_b) / NS
    return {str(s): _rates(theta[s], v[s], cfg) for s in UNPAIRED_S}


@pytest.mark.slow
def test_1_no_difference_false_promotion_at_most_5_percent() -> None:
    rates = {
        "normal": paired_results(False)["0.5"]["promote"],
        "t3": paired_results(True)["0.5"]["promote"],
        "unpaired": unpaired_results()["0.5"]["promote"],
    }
    assert all(r <= 0.05 for r in rates.values()), rates


@pytest.mark.slow
def test_2_harness_check_naive_peeking_promotes_22_to_33_percent() -> None:
    naive = paired_results(False)["naive"]["promote"]
    assert 0.22 <= naive <= 0.33, naive


@pytest.mark.slow
def test_3_no_difference_false_rollback_at_most_5_percent() -> None:
    rates = {
        "normal": paired_results(False)["0.5"]["rollback"],
        "t3": paired_results(True)["0.5"]["rollback"],
        "unpaired": unpaired_results()["0.5"]["rollback"],
    }
    assert all(r <= 0.05 for r in rates.values()), rates


@pytest.mark.slow
def test_4_paired_power_for_small_improvements() -> None:
    res = paired_results(False)
    assert res["0.45"]["promote"] >= 0.90, res["0.45"]  # 1.9 % lower MAE
    assert res["0.4"]["promote"] >= 0.99, res["0.4"]


@pytest.mark.slow
def test_5_paired_regression_is_rolled_back() -> None:
    res = paired_results(False)["0.6"]  # 4.3 % higher MAE
    assert res["rollback"] >= 0.99 and res["promote"] <= 0.01, res


@pytest.mark.slow
def test_6_unpaired_power() -> None:
    res = unpaired_results()["0.4"]
    assert res["promote"] >= 0.95, res


@pytest.mark.slow
def test_plan_predicts_the_simulated_power() -> None:
    """`canary plan` (Gaussian, known variance) agrees with the full simulation within Monte Carlo error."""
    rng = np.random.default_rng(301)
    c = rng.standard_normal(200_000)
    a = np.abs(c + 0.5 * rng.standard_normal(c.size))
    b = np.abs(c + 0.45 * rng.standard_normal(c.size))
    sigma, effect = float(np.std(a - b, ddof=1)), float(np.mean(a - b))
    plan = expected_labels(sigma, effect)
    assert plan.promote.probability == pytest.approx(paired_results(False)["0.45"]["promote"], abs=0.03)

"""mSPRT formulas against numerical integration; the guard's state machine: observe, decide, guardrails."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import integrate, stats

from evolution.errors import InvalidInput
from evolution.stats.canary import (
    GuardConfig,
    GuardState,
    check_guardrails,
    choose_tau,
    decide,
    guard_config_from_shadow,
    lambda_minus,
    lambda_plus,
    msprt_lambda,
    observe,
    observe_unpaired,
    y_for_alpha,
)
from evolution.stats.msprt import PROMOTE, ROLLBACK, log_lambda_plus, sequential_outcomes

CASES = [(0.01, 1e-4, 0.02), (-0.03, 4e-4, 0.01), (0.0, 1e-3, 0.05), (0.2, 0.01, 0.1), (0.05, 2e-4, 0.003)]


def _likelihood_ratio(theta: float, theta_hat: float, v: float) -> float:
    """N(theta_hat; theta, V) / N(theta_hat; 0, V)."""
    return math.exp((theta * theta_hat - 0.5 * theta * theta) / v)


def _mixture(theta_hat: float, v: float, tau: float, lo: float, hi: float, weight: float) -> float:
    def integrand(t: float) -> float:
        return weight * stats.norm.pdf(t, 0.0, tau) * _likelihood_ratio(t, theta_hat, v)

    value, _ = integrate.quad(integrand, lo, hi, epsabs=0.0, epsrel=1e-12, limit=200)
    return value


@pytest.mark.parametrize(("theta_hat", "v", "tau"), CASES)
def test_lambda_matches_the_integral_over_the_normal_mixture(theta_hat: float, v: float, tau: float) -> None:
    expected = _mixture(theta_hat, v, tau, -np.inf, np.inf, 1.0)
    assert msprt_lambda(theta_hat, v, tau) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize(("theta_hat", "v", "tau"), CASES)
def test_one_sided_lambdas_match_half_normal_mixtures(theta_hat: float, v: float, tau: float) -> None:
    plus = _mixture(theta_hat, v, tau, 0.0, np.inf, 2.0)
    minus = _mixture(theta_hat, v, tau, -np.inf, 0.0, 2.0)
    assert lambda_plus(theta_hat, v, tau) == pytest.approx(plus, rel=1e-9)
    assert lambda_minus(theta_hat, v, tau) == pytest.approx(minus, rel=1e-9)
    assert (lambda_plus(theta_hat, v, tau) + lambda_minus(theta_hat, v, tau)) / 2 == pytest.approx(
        msprt_lambda(theta_hat, v, tau), rel=1e-12
    )


def test_decisive_evidence_does_not_overflow() -> None:
    log_l = float(log_lambda_plus(5.0, 1e-8, 0.01))
    assert math.isfinite(log_l) and log_l > 1e5
    assert lambda_plus(5.0, 1e-8, 0.01) == math.inf
    assert 0.0 <= lambda_plus(-5.0, 1e-8, 0.01) < 1e-5  # log_ndtr keeps the far tail accurate


def test_y_solves_the_boundary_equation_and_sizes_tau() -> None:
    y = y_for_alpha(0.05)
    assert y == pytest.approx(8.21, abs=0.01)
    assert y - math.log1p(y) == pytest.approx(2 * math.log(20), rel=1e-12)
    assert choose_tau(0.6, 10_000) == pytest.approx(0.6 * math.sqrt(y / 10_000), rel=1e-12)
    with pytest.raises(InvalidInput):
        choose_tau(0.0, 100)


def _config(**kw: object) -> GuardConfig:
    base: dict[str, object] = {"tau": 0.02, "tau_harm": 0.08}
    base.update(kw)
    return GuardConfig(**base)  # type: ignore[arg-type]


def test_observe_merges_batches_like_one_sample() -> None:
    rng = np.random.default_rng(1)
    a, b = np.abs(rng.normal(size=1000)), np.abs(rng.normal(size=1000))
    cfg = _config()
    state = GuardState()
    for lo in range(0, 1000, 100):
        state = observe(state, cfg, a[lo : lo + 100], b[lo : lo + 100])
    d = a - b
    assert state.d.n == 1000
    assert state.d.mean == pytest.approx(d.mean(), rel=1e-12)
    assert state.d.m2 / 999 == pytest.approx(d.var(ddof=1), rel=1e-10)


def test_observe_winsorizes_at_fixed_bounds() -> None:
    cfg = _config(winsor_low=-1.0, winsor_high=1.0)
    state = observe(GuardState(), cfg, np.array([10.0, 0.0, 0.5]), np.array([0.0, 10.0, 0.0]))
    assert state.d.mean == pytest.approx((1.0 - 1.0 + 0.5) / 3)


def test_observe_refuses_bad_batches() -> None:
    cfg = _config()
    with pytest.raises(InvalidInput, match="paired batch"):
        observe(GuardState(), cfg, np.ones(3), np.ones(2))
    with pytest.raises(InvalidInput, match="finite"):
        observe(GuardState(), cfg, np.array([1.0, np.nan]), np.ones(2))
    with pytest.raises(InvalidInput, match="observe_unpaired"):
        observe(GuardState(), _config(paired=False), np.ones(2), np.ones(2))
    with pytest.raises(InvalidInput, match="observe\\(\\)"):
        observe_unpaired(GuardState(), cfg, np.ones(2), np.ones(2))


def _fill(state: GuardState, cfg: GuardConfig, n: int, shift: float, rng: np.random.Generator) -> GuardState:
    c = rng.normal(size=n)
    a = np.abs(c + 0.5 * rng.normal(size=n))
    b = np.maximum(np.abs(c + 0.5 * rng.normal(size=n)) - shift, 0.0)
    return observe(state, cfg, a, b)


def test_promotion_waits_for_the_minimum_sample() -> None:
    rng = np.random.default_rng(2)
    cfg = _config()
    state = _fill(GuardState(), cfg, 900, 0.3, rng)
    early = decide(state, cfg)
    assert early.action == "continue" and early.p_promote < cfg.alpha  # significant, but n < 1000
    assert early.state is not None and early.state.looks == 1
    late = decide(_fill(early.state, cfg, 100, 0.3, rng), cfg)
    assert late.action == "promote" and late.n == 1000 and late.theta_hat > 0


def test_rollback_after_200_labels_and_before_promotion_checks() -> None:
    rng = np.random.default_rng(3)
    cfg = _config()
    state = _fill(GuardState(), cfg, 199, -0.5, rng)
    assert decide(state, cfg).action == "continue"
    d = decide(_fill(state, cfg, 1, -0.5, rng), cfg)
    assert d.action == "rollback" and d.n == 200 and d.theta_hat < 0 and "harm" in d.reason


def test_no_significant_difference_at_n_max_and_decisions_stick() -> None:
    rng = np.random.default_rng(4)
    cfg = _config(n_max=2000)
    state = _fill(GuardState(), cfg, 2000, 0.0, rng)
    d = decide(state, cfg)
    assert d.action == "no_significant_difference"
    assert d.state is not None
    again = decide(_fill(d.state, cfg, 5000, 0.5, rng), cfg)
    assert again.action == "no_significant_difference"


def test_running_minimum_p_never_rises() -> None:
    rng = np.random.default_rng(5)
    cfg = _config()
    state = GuardState()
    ps = []
    for _ in range(30):
        state = _fill(state, cfg, 100, 0.0, rng)
        d = decide(state, cfg)
        assert d.state is not None
        state = d.state
        ps.append(d.p_promote)
    assert all(b <= a for a, b in itertools.pairwise(ps))


def test_decide_does_not_mutate_and_state_round_trips_as_json() -> None:
    rng = np.random.default_rng(6)
    cfg = _config()
    state = _fill(GuardState(), cfg, 500, 0.1, rng)
    snapshot = state.model_dump()
    d = decide(state, cfg)
    assert state.model_dump() == snapshot
    assert d.state is not None
    restored = GuardState.model_validate_json(d.state.model_dump_json())
    assert restored == d.state
    assert len(d.state.model_dump_json()) < 600


def test_unpaired_guard_counts_labels_per_arm() -> None:
    rng = np.random.default_rng(7)
    cfg = _config(paired=False, tau=0.05, tau_harm=0.2)
    state = observe_unpaired(
        GuardState(), cfg, np.abs(rng.normal(size=1500)), np.abs(rng.normal(size=900)) * 0.5
    )
    d = decide(state, cfg)
    assert d.n == 900 and d.action == "continue"  # clearly better, but the smaller arm has < 1000 labels
    state = observe_unpaired(d.state, cfg, np.empty(0), np.abs(rng.normal(size=100)) * 0.5)  # type: ignore[arg-type]
    assert decide(state, cfg).action == "promote"


def test_guardrails_roll_back_at_once() -> None:
    cfg = _config(max_latency_ms=250.0)
    ok = check_guardrails(cfg, 0, 5, 1000, 120.0, 100.0, 3600.0)
    assert ok is None
    cases = [
        ((1, 0, 1000, 100.0, 10.0, 3600.0), "invalid"),
        ((0, 20, 1000, 100.0, 10.0, 3600.0), "error rate"),
        ((0, 0, 1000, 400.0, 10.0, 3600.0), "latency"),
        ((0, 0, 1000, 100.0, 3600.0, 3600.0), "window"),
    ]
    for args, word in cases:
        d = check_guardrails(cfg, *args)
        assert d is not None and d.action == "rollback" and word in d.reason
    with pytest.raises(InvalidInput):
        check_guardrails(cfg, 5, 0, 3, None, 0.0, 3600.0)


def test_guardrail_rollback_carries_the_state() -> None:
    cfg = _config()
    state = _fill(GuardState(), cfg, 300, 0.0, np.random.default_rng(8))
    d = check_guardrails(cfg, 2, 0, 300, None, 50.0, 3600.0, state=state)
    assert d is not None and d.state is not None and d.state.decided == "rollback"
    assert decide(d.state, cfg).action == "rollback"


def test_config_from_shadow_fixes_tau_and_winsor_bounds() -> None:
    rng = np.random.default_rng(9)
    d = rng.standard_t(2, size=5000) * 0.3
    cfg = guard_config_from_shadow(d)
    lo, hi = np.quantile(d, [0.001, 0.999])
    assert cfg.winsor_low == pytest.approx(lo) and cfg.winsor_high == pytest.approx(hi)
    sigma = float(np.std(np.clip(d, lo, hi), ddof=1))
    assert cfg.tau == pytest.approx(choose_tau(sigma, 10_000))
    assert cfg.tau_harm == pytest.approx(choose_tau(sigma, 500)) and cfg.tau_harm > cfg.tau
    unpaired = guard_config_from_shadow(
        None,
        paired=False,
        champion_abs_err=np.abs(rng.normal(size=500)),
        candidate_abs_err=np.abs(rng.normal(size=500)),
    )
    assert unpaired.paired is False and unpaired.tau > 0
    with pytest.raises(InvalidInput, match="unpaired"):
        guard_config_from_shadow(d, paired=False)
    with pytest.raises(InvalidInput, match="zero variance"):
        guard_config_from_shadow(np.zeros(100), winsor_quantiles=None)


def test_live_guard_agrees_with_the_vectorised_rule() -> None:
    """The look-by-look guard and the simulation's vectorised rule take the same decision at the same look."""
    rng = np.random.default_rng(10)
    cfg = _config(tau=0.015, tau_harm=0.07)
    looks = 60
    ns = np.arange(1, looks + 1) * 100
    for shift in (0.05, -0.08, 0.0):
        runs = 8
        c = rng.normal(size=(runs, looks * 100))
        a = np.abs(c + 0.5 * rng.normal(size=c.shape))
        b = np.maximum(np.abs(c + 0.5 * rng.normal(size=c.shape)) - shift, 0.0)
        d = a - b
        s1 = np.cumsum(d.reshape(runs, looks, 100).sum(axis=2), axis=1)
        s2 = np.cumsum((d * d).reshape(runs, looks, 100).sum(axis=2), axis=1)
        theta = s1 / ns
        v = (s2 - s1 * theta) / (ns - 1) / ns
        out = sequential_outcomes(
            ns,
            theta,
            v,
            tau=cfg.tau,
            tau_harm=cfg.tau_harm,
            alpha=cfg.alpha,
            min_promote_n=cfg.min_promote_n,
            min_rollback_n=cfg.min_rollback_n,
            n_max=cfg.n_max,
        )
        for r in range(runs):
            state = GuardState()
            action, at = "continue", -1
            for k in range(looks):
                state = observe(state, cfg, a[r, k * 100 : (k + 1) * 100], b[r, k * 100 : (k + 1) * 100])
                dec = decide(state, cfg)
                assert dec.state is not None
                state = dec.state
                if dec.action != "continue":
                    action, at = dec.action, k
                    break
            expected = {
                0: "continue",
                PROMOTE: "promote",
                ROLLBACK: "rollback",
                3: "no_significant_difference",
            }
            assert action == expected[int(out.action[r])]
            assert at == int(out.stop_look[r])

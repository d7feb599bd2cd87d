"""Planning aid: how many labels a canary will take to promote or to roll back.

Method: Monte Carlo with a fixed seed, on the Gaussian approximation of the running mean. Each look adds
``look_every`` labels whose sum is N(look_every * theta, look_every * sigma^2); V_n = sigma^2 / n is taken as
known. At the sample sizes where the guard may decide (n >= 200) the plug-in variance of the live guard is
within a few per cent of sigma^2, and the mean of hundreds of absolute-error differences is close to normal,
so the plan is accurate to the Monte Carlo error (about 1 point of probability, a few per cent of labels). The
decisions are made by the same ``sequential_outcomes`` as the guard's own validation.
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import BaseModel, Field

from evolution.errors import InvalidInput
from evolution.stats.msprt import PROMOTE, ROLLBACK, choose_tau, sequential_outcomes

PLAN_SEED = 20_240_601


class ScenarioPlan(BaseModel):
    theta: float = Field(description="true mean of a - b in the scenario; > 0 means the candidate is better")
    intended: str = Field(description="the action the guard should take: promote or rollback")
    probability: float = Field(description="probability the intended action happens by N_max")
    wrong_probability: float = Field(description="probability of the opposite action")
    expected_labels: float = Field(
        description="mean labels until the guard stops (N_max when it never decides)"
    )
    median_labels: int | None = Field(description="median labels to the intended action; None if under 50 %")
    p90_labels: int | None = Field(
        description="90th percentile of labels to the intended action; None if under 90 %"
    )


class PlanResult(BaseModel):
    sigma: float
    effect: float
    paired: bool
    alpha: float
    n_opt: int
    harm_n_opt: int
    tau: float
    tau_harm: float
    n_max: int
    look_every: int
    labels_unit: str
    promote: ScenarioPlan
    rollback: ScenarioPlan
    method: str


def _scenario(
    theta: float, intended: int, sigma_eff: float, ns: np.ndarray, runs: int, seed: int, **rules: float
) -> ScenarioPlan:
    rng = np.random.default_rng(seed)
    step = int(ns[0])
    increments = rng.normal(step * theta, math.sqrt(step) * sigma_eff, size=(runs, ns.size))
    theta_hat = np.cumsum(increments, axis=1) / ns
    v = np.broadcast_to(sigma_eff**2 / ns, theta_hat.shape)
    out = sequential_outcomes(ns, theta_hat, v, **rules)  # type: ignore[arg-type]
    stop_n = np.where(out.stop_look >= 0, ns[np.maximum(out.stop_look, 0)], ns[-1])
    hit = out.action == intended
    wrong = out.action == (ROLLBACK if intended == PROMOTE else PROMOTE)
    to_intended = np.sort(np.where(hit, stop_n, np.iinfo(np.int64).max))

    def quantile(share: float) -> int | None:
        k = math.ceil(share * runs) - 1
        return int(to_intended[k]) if hit.mean() >= share else None

    return ScenarioPlan(
        theta=theta,
        intended="promote" if intended == PROMOTE else "rollback",
        probability=float(hit.mean()),
        wrong_probability=float(wrong.mean()),
        expected_labels=float(stop_n.mean()),
        median_labels=quantile(0.5),
        p90_labels=quantile(0.9),
    )


def expected_labels(
    sigma: float,
    effect: float,
    *,
    alpha: float = 0.05,
    n_opt: int = 10_000,
    harm_n_opt: int = 500,
    paired: bool = True,
    n_max: int = 20_000,
    min_promote_n: int = 1000,
    min_rollback_n: int = 200,
    look_every: int = 100,
    runs: int = 2000,
    seed: int = PLAN_SEED,
) -> PlanResult:
    """Labels a canary needs to promote a candidate better by ``effect`` and to roll back one worse by
    ``effect``.

    ``sigma``: paired, the standard deviation of d = a - b per request; unpaired, of one absolute error per
    arm
    (so V = 2 sigma^2 / n and labels are counted per arm). ``effect`` is in MAE units; its sign is ignored.
    tau and tau_harm are sized as ``guard_config_from_shadow`` sizes them.
    """
    if not (sigma > 0 and math.isfinite(sigma)):
        raise InvalidInput(f"sigma must be positive and finite, got {sigma}")
    if not (math.isfinite(effect) and effect != 0):
        raise InvalidInput(f"effect must be a non-zero MAE difference, got {effect}")
    if look_every < 1 or n_max < look_every or runs < 10:
        raise InvalidInput("look_every >= 1, n_max >= look_every and runs >= 10 are required")
    sigma_eff = sigma if paired else sigma * math.sqrt(2.0)
    tau = choose_tau(sigma_eff, n_opt, alpha)
    tau_harm = choose_tau(sigma_eff, harm_n_opt, alpha)
    ns = np.arange(1, n_max // look_every + 1, dtype=np.int64) * look_every
    rules = {
        "tau": tau,
        "tau_harm": tau_harm,
        "alpha": alpha,
        "min_promote_n": min_promote_n,
        "min_rollback_n": min_rollback_n,
        "n_max": n_max,
    }
    size = abs(effect)
    return PlanResult(
        sigma=sigma,
        effect=size,
        paired=paired,
        alpha=alpha,
        n_opt=n_opt,
        harm_n_opt=harm_n_opt,
        tau=tau,
        tau_harm=tau_harm,
        n_max=n_max,
        look_every=look_every,
        labels_unit="labelled requests" if paired else "labelled requests per arm",
        promote=_scenario(size, PROMOTE, sigma_eff, ns, runs, seed, **rules),
        rollback=_scenario(-size, ROLLBACK, sigma_eff, ns, runs, seed + 1, **rules),
        method=(
            f"Monte Carlo, {runs} Gaussian paths, seed {seed}, a look every {look_every} labels, "
            "known variance sigma^2/n, the guard's own decision rule"
        ),
    )

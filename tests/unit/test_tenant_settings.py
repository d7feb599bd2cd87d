from __future__ import annotations

import pytest

from evolution.errors import InvalidInput
from evolution.registry.tenant_settings import TenantSettings
from evolution.stats.drift_models import DriftConfig


def test_tenant_thresholds_override_decisions_but_not_the_frozen_binning() -> None:
    frozen = DriftConfig(bins=7, top_k=5)
    settings = TenantSettings.parse({"drift": {"alpha": 0.05, "alert_psi": 0.3}})
    effective = settings.drift_config_over(frozen)
    assert (effective.alpha, effective.alert_psi, effective.warn_psi) == (0.05, 0.3, 0.10)
    assert (effective.bins, effective.top_k) == (7, 5)


def test_unset_thresholds_keep_the_baselines_values() -> None:
    frozen = DriftConfig(alpha=0.02)
    assert TenantSettings.parse(None).drift_config_over(frozen) == frozen


def test_bad_settings_name_the_field() -> None:
    with pytest.raises(InvalidInput, match=r"drift\.bins"):
        TenantSettings.parse({"drift": {"bins": 3}})
    with pytest.raises(InvalidInput, match="alert_psi"):
        TenantSettings.parse({}).merged({"drift": {"warn_psi": 0.5}})

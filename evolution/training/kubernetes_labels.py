"""Labels every training pod carries: the Job backend sets them and deploy/'s NetworkPolicy selects on them."""

from __future__ import annotations

PART_OF_LABEL = "app.kubernetes.io/part-of"
COMPONENT_LABEL = "app.kubernetes.io/component"
TENANT_LABEL = "evolution.io/tenant"
MODEL_LABEL = "evolution.io/model"

PART_OF = "controlled-evolution"
TRAINING_COMPONENT = "training"

# The fixed labels a NetworkPolicy may select on; tenant and model labels vary per run.
TRAINING_POD_LABELS: dict[str, str] = {PART_OF_LABEL: PART_OF, COMPONENT_LABEL: TRAINING_COMPONENT}

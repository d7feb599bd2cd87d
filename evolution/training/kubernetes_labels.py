"""Labels every training pod carries: the Job backend sets them and deploy/'s NetworkPolicies select on them.

There are two kinds of training pod, told apart by their component label, because NetworkPolicies add up (a pod
selected by two policies may do what either allows) and the two kinds must never share a policy:

* ``training``: our own image running the built-in trainer (``networkpolicy-training.yaml``);
* ``tenant-trainer``: a tenant's image running the tenant's code under the training contract
  (``networkpolicy-tenant-trainer.yaml``: no ingress and no egress at all, since the contract exchanges everything
  through files and our own init container stages them from the shared volume).
"""

from __future__ import annotations

PART_OF_LABEL = "app.kubernetes.io/part-of"
COMPONENT_LABEL = "app.kubernetes.io/component"
TENANT_LABEL = "evolution.io/tenant"
MODEL_LABEL = "evolution.io/model"

PART_OF = "controlled-evolution"
TRAINING_COMPONENT = "training"
TENANT_TRAINER_COMPONENT = "tenant-trainer"

# The fixed labels a NetworkPolicy may select on; tenant and model labels vary per run.
TRAINING_POD_LABELS: dict[str, str] = {PART_OF_LABEL: PART_OF, COMPONENT_LABEL: TRAINING_COMPONENT}
TENANT_TRAINER_POD_LABELS: dict[str, str] = {
    PART_OF_LABEL: PART_OF,
    COMPONENT_LABEL: TENANT_TRAINER_COMPONENT,
}

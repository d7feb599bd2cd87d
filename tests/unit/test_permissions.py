from __future__ import annotations

import pytest

from evolution.errors import PermissionDenied
from evolution.security import PERMISSIONS, Action, Principal, Role, authorize


def test_every_action_has_a_row_in_the_permission_table() -> None:
    assert set(PERMISSIONS) == set(Action)


@pytest.mark.parametrize("action", list(Action))
@pytest.mark.parametrize("role", list(Role))
def test_role_matrix_on_own_and_other_tenant(action: Action, role: Role) -> None:
    principal = Principal.for_tenant("u", role, "acme")
    if role in PERMISSIONS[action]:
        assert authorize(principal, action, "acme") is principal
    else:
        with pytest.raises(PermissionDenied, match=str(role)):
            authorize(principal, action, "acme")
    with pytest.raises(PermissionDenied):
        authorize(principal, action, "other")


@pytest.mark.parametrize("action", list(Action))
def test_anonymous_is_refused_everything(action: Action) -> None:
    with pytest.raises(PermissionDenied, match="anonymous"):
        authorize(None, action, "acme")


def test_only_managers_and_admins_approve() -> None:
    assert PERMISSIONS[Action.APPROVE] == {Role.MANAGER, Role.ADMIN}
    assert PERMISSIONS[Action.FORCE_ROLLBACK] == {Role.ADMIN}

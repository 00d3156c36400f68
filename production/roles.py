"""Users and roles of the production profile (FAB auth manager), created from the environment (``.env``):
idempotent, run by ``production/init.py`` after ``airflow db migrate`` and by the live test.

Roles map to what people do with airloop:

* ``Viewer`` (Airflow's): reads DAGs, runs and logs; triggers nothing.
* ``AirloopOp``: a Viewer who may also trigger the operational DAGs (daily, monitor, release).
* ``AirloopMLLead``: an AirloopOp who may also trigger training (and so force a promotion through it) and
  rollback, and answer a promotion request (*Required Actions*: ``can_edit`` on ``HITL Detail``; Airflow
  also asks for edit rights on the request's DAG, which only this role has for ``airloop_train``).
* ``Admin`` (Airflow's): everything, for the deployment's owner.

Nobody is anonymous: FAB answers 401 without a token."""

from __future__ import annotations

import os

OPERATIONS = ("airloop_daily", "airloop_monitor", "airloop_release")
ROLES = {
    "AirloopOp": OPERATIONS,
    "AirloopMLLead": (*OPERATIONS, "airloop_train", "airloop_rollback"),
}
# beyond the per-DAG rights: answering human-in-the-loop requests (promotion approval)
EXTRA = {"AirloopMLLead": (("can_edit", "HITL Detail"), ("menu_access", "HITL Detail"))}
# user -> (role, the .env variable holding the password)
USERS = {
    "admin": ("Admin", "AIRFLOW_ADMIN_PASSWORD"),
    "viewer": ("Viewer", "AIRFLOW_VIEWER_PASSWORD"),
    "op": ("AirloopOp", "AIRFLOW_OP_PASSWORD"),
    "mllead": ("AirloopMLLead", "AIRFLOW_MLLEAD_PASSWORD"),
}


def main() -> None:
    from airflow.providers.fab.auth_manager.cli_commands.utils import get_application_builder

    with get_application_builder() as appbuilder:
        sm = appbuilder.sm
        viewer = sm.find_role("Viewer")
        for name, dag_ids in ROLES.items():
            role = sm.find_role(name) or sm.add_role(name)
            for permission in viewer.permissions:
                sm.add_permission_to_role(role, permission)
            for dag_id in dag_ids:  # trigger = edit the DAG + create its runs (FAB's per-DAG resources)
                sm.add_permission_to_role(role, sm.create_permission("can_edit", f"DAG:{dag_id}"))
                sm.add_permission_to_role(role, sm.create_permission("can_create", f"DAG Run:{dag_id}"))
            for action, resource in EXTRA.get(name, ()):
                sm.add_permission_to_role(role, sm.create_permission(action, resource))
        for username, (role_name, variable) in USERS.items():
            password = os.environ.get(variable)
            if not password:
                print(f"airloop roles: {variable} is not set: no user {username!r}")
                continue
            role = sm.find_role(role_name)
            user = sm.find_user(username=username)
            if user is None:
                sm.add_user(username, username, "airloop", f"{username}@airloop.invalid", role, password)
            else:
                user.roles = [role]
                sm.update_user(user)
                sm.reset_password(user.id, password)
    print(f"airloop roles: {', '.join(ROLES)} and users {', '.join(USERS)} are in place")


if __name__ == "__main__":
    main()

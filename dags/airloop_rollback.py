"""
### airloop rollback: give the `champion` alias back

Restores `previous_champion` (or the version you name) as `champion`; the replaced champion
becomes `previous_champion`, so a second rollback undoes the first. Who and why are recorded as
tags on both versions and as a `gate/rollback_*.json` artifact. The next scoring run uses the
restored version. A live `canary` is withdrawn (recorded on it as a `withdrawn` gate decision): it was
judged against the champion this replaces. Same as `airloop rollback --reason "..." [--to VERSION]`.

Trigger it from the UI with a reason (required) and, optionally, a version.
"""

from __future__ import annotations

from airflow.sdk import Param, dag, task

from airloop_dag_support import MODEL, dag_defaults, export_metrics


@dag(
    schedule=None,
    **dag_defaults(),
    tags=["airloop", "registry"],
    doc_md=__doc__,
    params={
        "to_version": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            description="Version to restore as champion (default: the previous_champion alias).",
        ),
        "reason": Param(
            "",
            type="string",
            minLength=5,
            description="Why you roll back (recorded on both model versions).",
        ),
    },
)
def airloop_rollback():
    @task(outlets=[MODEL])
    def rollback(params: dict | None = None, dag_run=None) -> dict:
        from airloop.config import get_settings
        from airloop.promote import rollback as restore

        to = params.get("to_version")
        actor = getattr(dag_run, "triggering_user_name", None) or f"airflow:{dag_run.run_id}"
        settings = get_settings()
        record = restore(settings, params["reason"], str(to) if to else None, actor=actor)
        print(f"Rolled back: champion is version {record['to_version']} (was {record['from_version']}): {record}")
        from airloop_alerts import send_event

        send_event(
            "rollback",
            f"{settings.registered_model} rolled back to version {record['to_version']} (was {record['from_version']})",
            f"By {record['by']} at {record['at']}.\nReason: {record['reason']}"
            + (f"\nCanary version {v} withdrawn." if (v := record.get("canary_withdrawn")) else ""),
        )
        return record

    export_metrics(rollback(), "registry")


airloop_rollback()

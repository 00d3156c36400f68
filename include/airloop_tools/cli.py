"""The ``airloop`` command: every user operation that is not a DAG trigger."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date
from typing import Any

from airloop.config import PROJECT_DIR, get_settings


def _emit(args: argparse.Namespace, data: Any, text: str) -> None:
    print(json.dumps(data, indent=2, default=str) if args.json else text)


def cmd_simulate(args: argparse.Namespace) -> int:
    from airloop.simulate import Scenario, simulate

    scenarios = [Scenario.parse(s) for s in args.scenario]
    paths = simulate(date.fromisoformat(args.start), args.days, get_settings(), scenarios)
    _emit(args, [str(p) for p in paths], "\n".join(str(p) for p in paths))
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from airloop.ingest import UnreadableFile, coerce, read_file
    from airloop.validate import check_frame, explain

    settings = get_settings()
    try:
        df = read_file(Path(args.path))
    except UnreadableFile as exc:
        _emit(args, {"path": args.path, "success": False, "error": str(exc)}, f"FAIL: {exc}")
        return 1
    df, notes = coerce(df, settings.spec)
    summary = {"path": args.path, "ds": args.date, "coercion_notes": notes, **check_frame(settings, df, args.date)}
    ok = summary["success"]
    text = f"PASS: {summary['evaluated']} expectations checked" if ok else f"FAIL:\n{explain(summary)}"
    if summary["warnings"]:
        text += f"\nWARNINGS (not blocking):\n{explain(summary, 'warnings')}"
    _emit(args, summary, text)
    return 0 if ok else 1


def cmd_suite(args: argparse.Namespace) -> int:
    from airloop.validate import write_suite

    path = write_suite(get_settings())
    _emit(args, {"suite": str(path)}, f"wrote {path} (hand-written expectations kept)")
    return 0


def cmd_release(args: argparse.Namespace) -> int:
    from pathlib import Path

    from airloop.quarantine import BatchQuarantined
    from airloop.release import release_batch

    try:
        result = release_batch(get_settings(), args.date, Path(args.path) if args.path else None)
    except BatchQuarantined as exc:
        _emit(args, {"ds": args.date, "released": False, "error": str(exc)}, f"NOT RELEASED: {exc}")
        return 1
    _emit(args, result, f"released {args.date}: {result['rows']} rows now in {result['path']}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from airloop.status import collect_status, render_status

    status = collect_status(get_settings())
    _emit(args, status, render_status(status))
    return 0


def cmd_metrics(args: argparse.Namespace) -> int:
    from airloop.metrics import exposition, write_textfiles

    settings, parts = get_settings(), args.part or ["lake", "registry"]
    if args.write:
        paths = write_textfiles(settings, parts)
        _emit(args, [str(p) for p in paths], "\n".join(f"wrote {p}" for p in paths))
    else:
        text = exposition(settings, parts)
        _emit(args, {"exposition": text}, text.rstrip("\n"))
    return 0


def cmd_features_env(args: argparse.Namespace) -> int:
    from airloop.features import feast_env

    env = feast_env(get_settings())
    _emit(args, env, "\n".join(f"export {k}='{v}'" for k, v in env.items()))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from airloop.train import train_model

    trigger = {
        "trigger": args.trigger,
        "causes": [c for c in (args.causes or "").split(",") if c],
        "reason": args.reason,
        "ds": args.trigger_ds or "",
        "airflow_run_id": args.airflow_run_id or "",
    }
    params = json.loads(args.hyperparameters) if args.hyperparameters else None
    result = train_model(
        get_settings(), args.end_date or None, args.window_days, args.model_type or None, params, trigger=trigger
    )
    # --json: one line, last, so a caller reading the last line of the log (DockerOperator's XCom) gets it all
    print(json.dumps(result, default=str) if args.json else f"registered version {result['version']} as challenger")
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    from airloop.promote import evaluate_gate, explain_decision

    if args.force and not args.reason:
        raise ValueError("--force needs --reason: a forced promotion is recorded with who and why")
    settings = get_settings()
    approval = settings.promotion_approval == "required"  # a pass then waits for a person, in Airflow
    evidence = evaluate_gate(
        settings, args.version, force_reason=args.reason if args.force else None, approval=approval
    )
    _emit(args, evidence, explain_decision(evidence))
    return 0 if evidence["decision"] in ("promoted", "forced") else 1


def cmd_rollback(args: argparse.Namespace) -> int:
    from airloop.promote import rollback

    record = rollback(get_settings(), args.reason, args.to)
    _emit(
        args,
        record,
        f"champion is now version {record['to_version']} (was {record['from_version']}); "
        f"recorded: {record['by']} at {record['at']}: {record['reason']}",
    )
    return 0


def cmd_lineage(args: argparse.Namespace) -> int:
    from airloop.lineage import render_lineage, trace_prediction

    chain = trace_prediction(get_settings(), args.date, args.entity)
    _emit(args, chain, render_lineage(chain))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from airloop.monitor import render_reports

    pages = [str(p) for p in render_reports(get_settings(), args.date)]
    _emit(args, {"ds": args.date, "pages": pages}, "\n".join(pages))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from airloop_tools.runner import run_range

    status = run_range(date.fromisoformat(args.from_date), date.fromisoformat(args.to_date), force=args.force)
    if args.json:
        print(json.dumps(status, indent=2, default=str))
    return 0 if all(d["airloop_daily"] == "success" for d in status["days"]) else 1


def cmd_demo(args: argparse.Namespace) -> int:
    from airloop_tools.runner import demo

    demo(date.fromisoformat(args.start), args.days, args.scenario)
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    from pathlib import Path

    from airloop.draft import draft_spec

    out = Path(args.out or f"{args.name}.yaml")
    result = draft_spec(
        Path(args.from_file), out, args.name, args.task, args.entity, args.timestamp, args.label, force=args.force
    )
    text = (
        f"wrote the spec {result['spec']} and its suite {result['suite']}: review them, then\n"
        f"  export AIRLOOP_SPEC_PATH={result['spec']}\n"
        f"  airloop run --from {result['first_day']} --to {result['last_day']}   "
        f"# after dropping each day's files into {result['landing']}"
    )
    _emit(args, result, text)
    return 0


def cmd_settings(args: argparse.Namespace) -> int:
    from airloop.config import settings_table

    settings = get_settings()
    _emit(args, settings.model_dump(mode="json"), settings_table())
    return 0


def cmd_load_settings(args: argparse.Namespace) -> int:
    from pathlib import Path

    from airloop_tools.airflow_settings import load_settings

    progress = (lambda _: None) if args.json else print
    try:
        loaded = load_settings(Path(args.file), progress=progress)
    except RuntimeError as exc:  # Airflow's own import refused it: its message, no traceback
        print(f"airloop load-settings: {exc}", file=sys.stderr)
        return 1
    _emit(args, loaded, f"loaded {args.file} (connections, variables, pools; existing entries overwritten)")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from airloop.serve import serve

    settings = get_settings()
    host, port = args.host or settings.serve_host, args.port or settings.serve_port
    auth = "bearer token" if settings.serve_auth else "NO authentication (AIRLOOP_SERVE_AUTH=false)"
    _emit(
        args,
        {"url": f"http://{host}:{port}", "docs": f"http://{host}:{port}/docs", "auth": settings.serve_auth},
        f"scoring service on http://{host}:{port} (docs: /docs; {auth}); Ctrl-C stops it",
    )
    serve(settings, host, port, args.workers)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="airloop", description="The closed ML loop on Airflow.")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, func: Any, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--json", action="store_true", help="print machine-readable JSON")
        p.set_defaults(func=func)
        return p

    p = add("simulate", cmd_simulate, "Write simulated landing batches (one per day).")
    p.add_argument("--start", required=True, help="first day, YYYY-MM-DD")
    p.add_argument("--days", type=int, default=1)
    p.add_argument("--scenario", action="append", default=[], help="name@START[:END], repeatable")

    p = add("validate", cmd_validate, "Check a CSV/Parquet file against the expectation suite (no Airflow needed).")
    p.add_argument("path")
    p.add_argument("--date", required=True, help="the logical date the file is for, YYYY-MM-DD")

    add("suite", cmd_suite, "Regenerate the spec-derived expectations in the suite file, keeping hand-written ones.")

    p = add("release", cmd_release, "Re-validate a fixed quarantined batch and, if it passes, move it on.")
    p.add_argument("--date", required=True, help="the quarantined date, YYYY-MM-DD")
    p.add_argument("--path", help="the fixed file or folder (default: the quarantined batch, edited in place)")

    p = add("train", cmd_train, "Train a challenger on a validated window (what airloop_train's train task runs).")
    p.add_argument("--end-date", help="last day of the window (default: the latest validated day)")
    p.add_argument("--window-days", type=lambda v: int(v) if v else None, help="default: AIRLOOP_TRAIN_WINDOW_DAYS")
    p.add_argument("--model-type", help="estimator (default: AIRLOOP_MODEL_TYPE, else the task's default)")
    p.add_argument("--hyperparameters", help="estimator keyword arguments as JSON, e.g. '{\"C\": 0.5}'")
    p.add_argument("--reason", default="manual", help="why this run trains (recorded in MLflow)")
    p.add_argument("--trigger", default="manual", choices=["manual", "bootstrap", "retrain"], help="what started it")
    p.add_argument("--causes", help="comma-separated: bootstrap, drift, performance (recorded in MLflow)")
    p.add_argument("--trigger-ds", help="the day whose check triggered this run (recorded in MLflow)")
    p.add_argument("--airflow-run-id", help="the Airflow run that asked for it (recorded in MLflow)")

    p = add("promote", cmd_promote, "Run the promotion gate for a model version (or force it, with a reason).")
    p.add_argument("--version", required=True, help="the registered model version")
    p.add_argument("--force", action="store_true", help="promote even if rules fail (needs --reason)")
    p.add_argument("--reason", help="why (recorded on the version)")

    p = add("rollback", cmd_rollback, "Give the champion alias back to previous_champion (or --to VERSION).")
    p.add_argument("--to", help="the version to restore (default: previous_champion)")
    p.add_argument("--reason", required=True, help="why (recorded on both versions)")

    p = add("lineage", cmd_lineage, "Trace a prediction back to model, run, training window and raw files.")
    p.add_argument("--date", required=True, help="the scored day, YYYY-MM-DD")
    p.add_argument("--entity", required=True, help="the entity key of the prediction row (an id of the spec's type)")

    p = add("serve", cmd_serve, "Real-time scoring service: POST /predict scores entities with the champion.")
    p.add_argument("--host", help="bind address (default: AIRLOOP_SERVE_HOST, 127.0.0.1)")
    p.add_argument("--port", type=int, help="default: AIRLOOP_SERVE_PORT, 8000")
    p.add_argument("--workers", type=int, help="uvicorn worker processes (default: AIRLOOP_SERVE_WORKERS, 1)")

    add("status", cmd_status, "Show champion/challenger, partitions, quarantine, drift events and retrains.")

    p = add(
        "metrics",
        cmd_metrics,
        "Prometheus metrics read from the loop's state, in the text exposition format (--write: the textfiles "
        "node-exporter's textfile collector reads, under $AIRLOOP_HOME/metrics/).",
    )
    p.add_argument("--write", action="store_true", help="write the .prom files atomically instead of printing")
    p.add_argument("--part", action="append", choices=["lake", "registry"], help="only this part (repeatable)")

    p = add("report", cmd_report, "The HTML pages of a day's monitoring reports (rendered again if pruned).")
    p.add_argument("--date", required=True, help="the checked day, YYYY-MM-DD")

    add(
        "features-env",
        cmd_features_env,
        "Print the env vars feature_repo/feature_store.yaml needs (for the feast CLI).",
    )

    p = add("run", cmd_run, "Run your landing days through the real DAGs, in order (resumable; never simulates).")
    p.add_argument("--from", dest="from_date", required=True, help="first day, YYYY-MM-DD")
    p.add_argument("--to", dest="to_date", required=True, help="last day, YYYY-MM-DD")
    p.add_argument("--force", action="store_true", help="run days again whose monitor check is already recorded")

    p = add("demo", cmd_demo, "The simulator's days through the real DAGs, in a fresh demo home (make demo).")
    p.add_argument("--start", default="2026-01-01", help="first simulated day")
    p.add_argument("--days", type=int, default=21, help="simulated days (21: shift, its week, retrain, quiet days)")
    p.add_argument(
        "--scenario",
        action="append",
        default=None,
        help="name@START[:END], repeatable (default: schema_break on day 6, covariate_shift from day 9)",
    )

    p = add("init", cmd_init, "Draft a dataset spec (and its suite) from a sample file of your data, to review.")
    p.add_argument("--from", dest="from_file", required=True, help="a sample CSV or Parquet file, or a folder of them")
    p.add_argument("--entity", required=True, help="the entity id column")
    p.add_argument("--timestamp", required=True, help="the event timestamp column")
    p.add_argument("--label", required=True, help="the label column")
    p.add_argument("--task", required=True, choices=["binary_classification", "regression"])
    p.add_argument("--name", required=True, help="the dataset's name (Feast objects and the model are named after it)")
    p.add_argument("--out", help="where to write the spec (default: ./<name>.yaml)")
    p.add_argument("--force", action="store_true", help="overwrite an existing spec file")

    add("settings", cmd_settings, "Every AIRLOOP_* setting with its default and meaning (--json: current values).")

    p = add(
        "load-settings",
        cmd_load_settings,
        "Load airflow_settings.yaml (Astro format: connections, variables, pools) into Airflow; "
        "${VAR} references are read from the environment. Idempotent.",
    )
    p.add_argument("--file", default=str(PROJECT_DIR / "airflow_settings.yaml"), help="default: %(default)s")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, FileExistsError, ValueError) as exc:  # user errors: one clear line, no traceback
        print(f"airloop {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""The ``airloop`` command: every user operation that is not a DAG trigger."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date
from typing import Any

from airloop.config import get_settings


def _emit(args: argparse.Namespace, data: Any, text: str) -> None:
    print(json.dumps(data, indent=2, default=str) if args.json else text)


def cmd_simulate(args: argparse.Namespace) -> int:
    from airloop.simulate import Scenario, simulate

    scenarios = [Scenario.parse(s) for s in args.scenario]
    paths = simulate(date.fromisoformat(args.start), args.days, get_settings(), scenarios)
    _emit(args, [str(p) for p in paths], "\n".join(str(p) for p in paths))
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    import pandas as pd

    from airloop.ingest import coerce
    from airloop.validate import check_frame, explain

    spec = get_settings().spec
    df = pd.read_parquet(args.path) if args.path.endswith(".parquet") else pd.read_csv(args.path)
    df, notes = coerce(df, spec)
    summary = {"path": args.path, "coercion_notes": notes, **check_frame(df, spec)}
    ok = summary["success"]
    text = f"PASS: {summary['evaluated']} expectations met" if ok else f"FAIL:\n{explain(summary)}"
    _emit(args, summary, text)
    return 0 if ok else 1


def cmd_status(args: argparse.Namespace) -> int:
    from airloop.status import collect_status, render_status

    status = collect_status(get_settings())
    _emit(args, status, render_status(status))
    return 0


def cmd_features_env(args: argparse.Namespace) -> int:
    from airloop.features import feast_env

    env = feast_env(get_settings())
    _emit(args, env, "\n".join(f"export {k}='{v}'" for k, v in env.items()))
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

    add("status", cmd_status, "Show champion/challenger, partitions, quarantine, drift events and retrains.")

    add(
        "features-env",
        cmd_features_env,
        "Print the env vars feature_repo/feature_store.yaml needs (for the feast CLI).",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

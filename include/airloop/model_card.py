"""Model card: what a promoted version is for, what it was trained on, how it was judged."""

from __future__ import annotations

import html
from typing import Any

import pandas as pd

from airloop import lake
from airloop import model as m
from airloop.config import Settings
from airloop.labels import training_labels
from airloop.registry import client

STYLE = (
    "body{font-family:sans-serif;max-width:60em;margin:2em auto}table{border-collapse:collapse}"
    "td,th{padding:2px 8px;border-bottom:1px solid #ddd}"
)
Section = tuple[str, list[str | pd.DataFrame]]


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and pd.isna(v)):
        return "—"
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def card_sections(settings: Settings, version: str, evidence: dict[str, Any]) -> tuple[str, list[Section]]:
    """The card's title and sections (paragraphs and tables), built from the registry and the lake."""
    spec = settings.spec
    c = client(settings)
    mv = c.get_model_version(settings.registered_model, version)
    run = c.get_run(mv.run_id)
    p, measured = run.data.params, run.data.metrics
    start, end = m.train_window(run)
    days = lake.dates(settings, lake.VALIDATED, start, end)
    data = lake.read(settings, lake.VALIDATED, days)
    label = training_labels(settings, days)[spec.label]  # what the model learned from (feed or batch)
    label_stat = (
        f"positive rate {label.mean():.3f}" if spec.task == "binary_classification" else f"mean {label.mean():.2f}"
    )
    splits = pd.DataFrame(
        [
            {"split": s, "rows": int(measured.get(f"rows_{s}", 0))}
            | {k.removeprefix(f"{s}_"): _fmt(v) for k, v in measured.items() if k.startswith(f"{s}_")}
            for s in ("train", "validation", "holdout")
        ]
    )
    baseline = pd.DataFrame(
        [
            {
                "feature": f,
                "mean": _fmt(float(data[f].mean())),
                "std": _fmt(float(data[f].std())),
                "missing": f"{data[f].isna().mean():.1%}",
            }
            for f in spec.numeric_features
        ]
        + [
            {
                "feature": f,
                "mean": ", ".join(f"{k} {v:.0%}" for k, v in data[f].value_counts(normalize=True).items()),
                "std": "",
                "missing": f"{data[f].isna().mean():.1%}",
            }
            for f in spec.categorical_features
        ]
    )
    comp = evidence.get("comparison") or {}
    ci = (
        f"{comp['difference']:+.4f} [{comp['ci_low']:+.4f}, {comp['ci_high']:+.4f}] "
        f"({evidence['settings']['confidence']:.0%} paired bootstrap, {comp['resamples']} resamples)"
        if comp
        else "no champion to compare with (first model)"
    )
    checks = pd.DataFrame(
        [
            {"rule": ch["rule"], "result": "pass" if ch["passed"] else "FAIL"}
            | {"enforced": ch["enforced"], "detail": ch["detail"]}
            for ch in evidence["checks"]
        ]
    )
    slices = pd.DataFrame(
        [
            {
                "slice": s["slice"],
                "rows": s["rows"],
                f"challenger {evidence['metric']}": _fmt(s["challenger"]),
                f"champion {evidence['metric']}": _fmt(s["champion"]),
                "floor": s["floor"],
                "passed": s["passed"],
            }
            for s in evidence["slices"]
        ]
    )
    validation = pd.DataFrame([{"day": d, "status": s} for d, s in evidence["training_validation"].items()])
    hyper = {k.removeprefix(m.HYPERPARAMETER_PREFIX): v for k, v in p.items() if k.startswith(m.HYPERPARAMETER_PREFIX)}
    title = f"Model card: {settings.registered_model} version {version}"
    sections: list[Section] = [
        (
            "Model",
            [
                f"`models:/{settings.registered_model}/{version}` — {p[m.PARAM_MODEL_TYPE]} "
                f"({'hyperparameters ' + str(hyper) if hyper else 'default hyperparameters'}), "
                f"task {spec.task} on dataset `{spec.name}`, feature service `{p[m.PARAM_FEATURE_SERVICE]}`.",
                f"Training run `{run.info.run_id}`, git commit `{run.data.tags.get(m.TAG_GIT_COMMIT, 'unknown')}`, "
                f"trigger: {run.data.tags.get(m.TAG_TRIGGER_REASON, 'manual')}.",
            ],
        ),
        ("Intended use", [spec.intended_use or "Not stated in the dataset spec."]),
        (
            "Training data",
            [
                f"Validated days {start}..{end} ({len(days)} days, {len(data)} rows, "
                f"{label_stat}); time split: the last {p[m.PARAM_HOLDOUT_DAYS]} days are the frozen holdout, "
                f"the {p[m.PARAM_VALIDATION_DAYS]} before them the validation slice.",
                splits,
            ],
        ),
        ("Data validation of the training window", [validation]),
        (
            "Evaluation and promotion gate",
            [
                f"Decision: **{evidence['decision']}** — {evidence['reason']}",
                *([f"Approval: {a['answer']}, at {a['at']}."] if (a := evidence.get("approval")) else []),
                f"{evidence['metric']} {_fmt(evidence['challenger_value'])} on {evidence['evaluation_rows']} rows "
                f"({', '.join(evidence['evaluation_days'])}); champion v{evidence['champion_version']}: "
                f"{_fmt(evidence['champion_value'])}; difference {ci}.",
                f"Model size {evidence['model_size_mb']:.2f} MB; single-row latency median "
                f"{evidence['latency']['median_ms']:.1f} ms, p95 {evidence['latency']['p95_ms']:.1f} ms.",
                checks,
            ],
        ),
        ("Slices", [slices if len(slices) else "No slices are named in the dataset spec."]),
        (
            "Drift baseline",
            [
                "The monitor compares recent days with this training window; its feature distribution:",
                baseline,
            ],
        ),
        ("Known limits", ["\n".join(f"- {x}" for x in spec.known_limits) or "None stated in the dataset spec."]),
    ]
    return title, sections


def md_table(df: pd.DataFrame) -> str:
    """A DataFrame as a Markdown table (its column names as the header row)."""
    cols = [str(c) for c in df.columns]
    rows = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    rows += ["| " + " | ".join(str(v).replace("|", "\\|") for v in r) + " |" for r in df.itertuples(index=False)]
    return "\n".join(rows)


def render_markdown(title: str, sections: list[Section]) -> str:
    out = [f"# {title}"]
    for head, parts in sections:
        out.append(f"\n## {head}\n")
        out += [md_table(x) if isinstance(x, pd.DataFrame) else x for x in parts]
    return "\n\n".join(out) + "\n"


def render_html(title: str, sections: list[Section]) -> str:
    body = [f"<h1>{html.escape(title)}</h1>"]
    for head, parts in sections:
        body.append(f"<h2>{html.escape(head)}</h2>")
        for x in parts:
            if isinstance(x, pd.DataFrame):
                body.append(x.to_html(index=False, border=0, classes="table"))
            elif x.startswith("- "):
                body.append("<ul>" + "".join(f"<li>{html.escape(li[2:])}</li>" for li in x.splitlines()) + "</ul>")
            else:
                body.append(f"<p>{html.escape(x).replace('**', '')}</p>")
    head = f"<meta charset='utf-8'><title>{html.escape(title)}</title><style>{STYLE}</style>"
    return f"<!doctype html><html><head>{head}</head><body>{''.join(body)}</body></html>\n"


def write_model_card(settings: Settings, version: str, evidence: dict[str, Any]) -> str:
    """Log ``model_card/model_card.md`` and ``.html`` on the version's run; return the artifact URI."""
    c = client(settings)
    mv = c.get_model_version(settings.registered_model, version)
    title, sections = card_sections(settings, version, evidence)
    c.log_text(mv.run_id, render_markdown(title, sections), "model_card/model_card.md")
    c.log_text(mv.run_id, render_html(title, sections), "model_card/model_card.html")
    uri = f"runs:/{mv.run_id}/model_card/model_card.html"
    c.set_model_version_tag(settings.registered_model, version, m.TAG_MODEL_CARD, uri)
    return uri

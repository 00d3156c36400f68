"""The one typed configuration object. Defaults work out of the box; ``AIRLOOP_*`` env vars override."""

from __future__ import annotations

from datetime import date
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from airloop import lake
from airloop.gate import RULES
from airloop.model import METRICS, MODEL_TYPES, TASK_DEFAULTS, gate_metrics
from airloop.spec import DatasetSpec, load_spec

PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_DIR = PACKAGE_DIR.parents[1]
ENV_PREFIX = "AIRLOOP_"


def default_home() -> Path:
    """``.airloop/`` in the project checkout (what ``make`` uses too), else ``~/.airloop`` for an installed package."""
    return PROJECT_DIR / ".airloop" if (PROJECT_DIR / "pyproject.toml").exists() else Path.home() / ".airloop"


class Settings(BaseSettings):
    """Where data lives, which services to use, and the pipeline's rules. Each field is the environment
    variable ``AIRLOOP_<NAME>``; its docstring is the README's settings table (``airloop settings``)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, use_attribute_docstrings=True)

    # --- where things are
    home: Path = Field(default_factory=default_home)
    """State folder: landing, lake, MLflow, Feast, GX, monitoring (default: `.airloop/` in the project checkout)."""
    spec_path: Path = PACKAGE_DIR / "dataset.yaml"
    """The dataset spec (see docs/spec.md); `airloop init` drafts one from a sample file."""
    suite_dir: Path | None = None
    """Folder of the expectation suite `<spec name>.json` (default: `expectations/` next to the spec)."""
    feature_repo: Path = PROJECT_DIR / "feature_repo"
    """The Feast repo (`feature_store.yaml`, `definitions.py`)."""

    # --- sources and sinks
    source: Literal["local", "s3"] = "local"
    """Where daily batches come from: the landing folder or S3."""
    s3_bucket: str = "airloop-landing"
    """S3 bucket of the landing batches (credentials: the `airloop_s3` connection or boto3's environment)."""
    s3_prefix: str = lake.S3_LANDING_PREFIX
    """Key prefix of a day's landing objects; `{ds}` is the date."""
    s3_conn_id: str = "airloop_s3"
    """Airflow connection with S3 credentials and endpoint."""
    s3_output_bucket: str | None = None
    """When set, each day's predictions are also uploaded here (e.g. for a warehouse to load)."""
    s3_output_prefix: str = lake.S3_OUTPUT_PREFIX
    """Key prefix of uploaded outputs; `{zone}` and `{ds}` are filled in."""

    # --- services
    mlflow_tracking_uri: str | None = None
    """MLflow tracking and registry URI (default: SQLite under `home`)."""
    model_name: str | None = None
    """Registered model name (default: `airloop_<spec name>`)."""
    experiment_name: str = "airloop"
    """MLflow experiment of the training runs (monitoring logs to `<name>_monitoring`)."""
    online_store: Literal["sqlite", "redis"] = "sqlite"
    """Feast online store."""
    redis_connection: str = "localhost:6379"
    """Redis online store connection string (Feast format, e.g. `host:6379,db=1,password=...`)."""
    online_writer: Literal["auto", "airloop", "feast"] = "auto"
    """How features reach the online store: `airloop`'s columnar writer (the bytes Feast writes, for the Feast
    version, stores and types its compatibility test covers), Feast's `write_to_online_store`, or `auto`: the
    columnar writer where covered, else Feast's (one log line says why)."""
    online_write_buckets: int | None = Field(None, ge=1)
    """Entity-hash buckets of a day's online-store write: the daily DAG maps one task per bucket (on Redis they
    write at once; on SQLite, a single-writer file, they would take turns). Default: 4 on Redis, 1 on SQLite
    (one `materialize` task does it all)."""

    # --- the simulator (make demo, airloop simulate)
    seed: int = 7
    """Seed of the simulator, the split of samples and the estimators."""
    customers: int = 3000
    """Simulated entities."""
    rows_per_day: int = 600
    """Simulated rows per day."""
    label_source: Literal["feed", "batch"] = "feed"
    """Where training and the gate read labels: `feed` (the label files under `landing/labels/`, as they
    arrive) or `batch` (the daily batch's label column, for batches that arrive with final labels)."""
    label_delay_days: int = 1
    """The simulator delivers the labels of day D on day D + this."""

    # --- training
    model_type: str | None = None
    """Estimator: `logistic_regression` or `hist_gradient_boosting` (classification), `ridge` or
    `hist_gradient_boosting` (regression); default the first."""
    train_window_days: int = 30
    """Days in a training window (validated days only; quarantined days are left out)."""
    holdout_days: int = 2
    """The most recent days of the window, frozen as the promotion gate's holdout."""
    validation_days: int = 1
    """The days before the holdout, for the validation metrics and plots."""
    min_train_days: int = 4
    """Validated days a window needs before anything trains (must exceed holdout + validation days)."""
    feature_ttl_days: int = 30
    """Feast TTL: an older feature value counts as missing."""
    skew_sample: int = 50
    """Entities compared online vs offline at each scoring run (0: off)."""

    # --- the promotion gate
    primary_metric: str | None = None
    """The gate's metric, higher is better (default: `roc_auc` for classification, `r2` for regression)."""
    promotion_floor: float | None = None
    """Minimum of the primary metric (default: 0.6 for roc_auc, 0.0 for r2)."""
    promotion_tolerance: float = 0.01
    """Non-inferiority margin: the CI's lower bound of (challenger − champion) must be at least −this."""
    gate_rules: list[str] = list(RULES)
    """The enforced rules, as a JSON list (see `airloop.gate`): floor, min_rows, non_inferiority, slices,
    budget, validation."""
    gate_min_rows: int = 500
    """Fewest evaluation rows the gate judges on (fewer: refuse rather than guess); lower it for small data."""
    gate_min_slice_rows: int = 50
    """Fewest rows a slice of the spec needs."""
    gate_confidence: float = 0.95
    """Confidence of the paired-bootstrap interval."""
    gate_bootstrap: int = 1000
    """Paired bootstrap resamples."""
    gate_recent_days: int = 7
    """Labelled validated days after the training window added to the holdout."""
    gate_max_model_mb: float = 50.0
    """Model size budget."""
    gate_max_latency_ms: float = 50.0
    """Median single-row predict latency budget."""
    promotion_approval: Literal["off", "required"] = "off"
    """`required`: a challenger that passed the gate waits in `airloop_train` for a person's Approve/Reject
    (Airflow's Required Actions) before any alias moves."""
    approval_timeout_hours: float = 24.0
    """Hours a promotion waits for an answer; no answer by then rejects it as "timed out"."""
    approvers: list[str] = []
    """Airflow user ids who may answer a promotion request (empty: whoever may act on `airloop_train`)."""
    canary_fraction: float = 0.0
    """Share of each day's entities (a stable hash of the id) scored by a `canary`: with it, a challenger
    that passes the gate against a champion becomes the canary, not the champion (0: no canary)."""
    canary_days: int = 7
    """Days a canary scores before the monitor judges it against the champion on their own entities."""
    canary_min_rows: int = 200
    """Labelled rows each group (canary, champion) needs before the canary is judged."""
    backfill_promotes: bool = False
    """Let training runs of an Airflow backfill promote (a history load that should produce a champion)."""
    shadow_scoring: bool = False
    """Also score with the challenger, into `predictions_shadow/` (evidence for the gate)."""
    score_shard_rows: int = 1_000_000
    """Rows per scoring shard: the daily DAG maps one task per shard."""
    chunk_rows: int = 250_000
    """Rows per chunk when ingesting, validating and scoring a day (memory stays flat)."""

    # --- monitoring
    drift_current_days: int = 7
    """Most recent validated days the drift check compares with the reference (whole weeks: a weekly
    rhythm is not drift)."""
    drift_reference_days: int = 14
    """Most recent days of the champion's training window the drift check uses as reference (only those
    on or after the last change point inside the window)."""
    drift_settle_days: int = 7
    """Validated days since the change point a drift retrain waits for, so the new model and its
    reference hold this much of the new regime."""
    drift_share_threshold: float = 0.3
    """Share of drifted columns at which Evidently flags dataset drift."""
    retrain_cooldown_days: int = 3
    """Days after a retrain in which no drift triggers another; doubled after each refused retrain in a row."""
    retrain_backoff_max_days: int = 30
    """Upper bound of the cool-down after refused retrains (the exponential back-off)."""
    drift_num_method: str | None = None
    """Evidently stat test for numeric columns (ks, wasserstein, psi, ...; default: by sample size)."""
    drift_cat_method: str | None = None
    """Evidently stat test for categorical columns (chisquare, jensenshannon, psi, ...)."""
    drift_num_threshold: float | None = None
    """Threshold of the numeric test (default: Evidently's)."""
    drift_cat_threshold: float | None = None
    """Threshold of the categorical test (default: Evidently's)."""
    drift_column_methods: dict[str, str] = {}
    """Per-column stat test, as JSON, e.g. `{"plan": "psi"}`."""
    drift_persist_checks: int = 2
    """Consecutive checks drift must hold before a retrain."""
    drift_sample_rows: int = 100_000
    """Rows per side the drift reports read (a seeded sample above it; 0: all)."""
    report_html_days: int = 14
    """Days the monitor's HTML reports are kept (each ~3.7 MB); their gzipped snapshots (~1 % of that) and
    `result.json` are kept for good, and `airloop report --date D` renders a pruned page again. 0: keep all."""
    performance_floor: float | None = None
    """Retrain when the champion's metric on labelled days is below this (default: the promotion floor)."""
    performance_window_days: int = 2
    """Most recent labelled, scored days the performance check reads."""
    min_new_labels: int = 200
    """Labelled rows after the last training window needed before a retrain."""

    metrics_export: bool = True
    """Each DAG run ends with `export_metrics`, which rewrites the Prometheus textfiles under `home/metrics/`
    (read where the DAGs are parsed)."""
    metrics_days: int = 30
    """Most recent days with per-day series (label `ds`) in the Prometheus metrics (`airloop metrics`)."""

    # --- orchestration (read where the DAGs are parsed)
    nightly_cron: str = "0 0 * * *"
    """Schedule of the daily chain; each run processes the interval (calendar day) that just ended."""
    monitor_cron: str = "0 3 * * *"
    """Schedule of the monitor, after the daily chain has scored the same day."""
    timezone: str = "UTC"
    """Time zone of both schedules."""
    task_retries: int = 2
    """Retries per task (exponential backoff from ``task_retry_delay_seconds``; a quarantined batch is never
    retried)."""
    task_retry_delay_seconds: int = 30
    """First retry delay of every task; doubled per retry, at most 10 minutes."""
    start_date: date = date(2000, 1, 1)
    """Earliest logical date the DAGs accept (history of any year; catchup stays off)."""

    # --- real-time scoring (`airloop serve`)
    serve_host: str = "127.0.0.1"
    """Address `airloop serve` binds (loopback; bind 0.0.0.0 only behind a proxy or in a container)."""
    serve_port: int = 8000
    """Port of `airloop serve`."""
    serve_workers: int = 1
    """uvicorn worker processes of `airloop serve`."""
    serve_token: SecretStr | None = None
    """Bearer token `POST /predict` requires."""
    serve_auth: bool = True
    """`false`: no token asked (say so on purpose; the service logs a warning)."""
    serve_refresh_seconds: float = 30.0
    """The champion alias is re-read this often: a promotion or rollback is served within it."""
    serve_store_timeout_seconds: float = 1.0
    """Redis connect/read timeout of the service's online lookups."""
    serve_fast_path: bool = True
    """`false`: read features through Feast's `get_online_features` and score through the sklearn pipeline, as
    the service does anyway where its fast paths do not cover the store or the model (measured baseline)."""
    serve_max_entities: int = 1000
    """Entity ids per request."""
    serve_log_flush_seconds: float = 5.0
    """The service writes one `predictions_online/` part file per flush."""
    serve_log_max_buffer: int = 1_000_000
    """Predictions held while the lake is unwritable; older ones are dropped."""

    # --- optional containerised training (plugins/airloop_container.py)
    container_image: str | None = None
    """When set, `airloop_train` trains in a container of this image (DockerOperator)."""
    container_data_volume: str = "airloop-data"
    """Named volume or absolute host path holding `home`, mounted at the same path."""
    container_network: str | None = None
    """Docker network from which MLflow, Redis and S3 are reachable (default: the bridge)."""
    container_user: str = "50000:0"
    """User the container runs as (the Dockerfile's)."""

    @model_validator(mode="after")
    def _check_split(self) -> Settings:
        if self.min_train_days <= self.holdout_days + self.validation_days:
            raise ValueError(
                f"AIRLOOP_MIN_TRAIN_DAYS ({self.min_train_days}) must exceed AIRLOOP_HOLDOUT_DAYS + "
                f"AIRLOOP_VALIDATION_DAYS ({self.holdout_days} + {self.validation_days}): training needs at "
                "least one day of its own"
            )
        if self.min_train_days > self.train_window_days:
            raise ValueError(
                f"AIRLOOP_MIN_TRAIN_DAYS ({self.min_train_days}) cannot exceed AIRLOOP_TRAIN_WINDOW_DAYS "
                f"({self.train_window_days}): no window could ever hold enough days"
            )
        return self

    @model_validator(mode="after")
    def _check_drift(self) -> Settings:
        for name in (
            "metrics_days",
            "drift_current_days",
            "drift_reference_days",
            "drift_settle_days",
            "retrain_cooldown_days",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"AIRLOOP_{name.upper()} must be at least 1, got {getattr(self, name)}")
        if self.retrain_backoff_max_days < self.retrain_cooldown_days:
            raise ValueError(
                f"AIRLOOP_RETRAIN_BACKOFF_MAX_DAYS ({self.retrain_backoff_max_days}) cannot be below "
                f"AIRLOOP_RETRAIN_COOLDOWN_DAYS ({self.retrain_cooldown_days})"
            )
        return self

    @model_validator(mode="after")
    def _check_gate(self) -> Settings:
        unknown = sorted(set(self.gate_rules) - set(RULES))
        if unknown:
            raise ValueError(f"AIRLOOP_GATE_RULES names unknown rules {unknown}; choose from {list(RULES)}")
        if not 0.5 < self.gate_confidence < 1:
            raise ValueError(f"AIRLOOP_GATE_CONFIDENCE must be in (0.5, 1), got {self.gate_confidence}")
        if not 0 <= self.canary_fraction < 1:
            raise ValueError(f"AIRLOOP_CANARY_FRACTION must be in [0, 1), got {self.canary_fraction}")
        if self.approval_timeout_hours <= 0:
            raise ValueError(f"AIRLOOP_APPROVAL_TIMEOUT_HOURS must be > 0, got {self.approval_timeout_hours}")
        return self

    @model_validator(mode="after")
    def _check_task_choices(self) -> Settings:
        task = self.spec.task
        if self.primary_metric is not None and self.primary_metric not in gate_metrics(task):
            known = "unknown" if self.primary_metric not in METRICS else "not a higher-is-better metric of " + task
            raise ValueError(
                f"AIRLOOP_PRIMARY_METRIC={self.primary_metric!r} is {known}; choose from {gate_metrics(task)}"
            )
        if self.label_source == "batch" and not self.spec.label_in_batch:
            raise ValueError(
                "AIRLOOP_LABEL_SOURCE=batch reads the batch's label column, but the dataset spec says "
                "label_in_batch: false; use the label feed (AIRLOOP_LABEL_SOURCE=feed)"
            )
        if self.model_type is not None and self.model_type not in MODEL_TYPES[task]:
            raise ValueError(
                f"AIRLOOP_MODEL_TYPE={self.model_type!r} does not fit {task}; choose from {MODEL_TYPES[task]}"
            )
        return self

    @cached_property
    def spec(self) -> DatasetSpec:
        return load_spec(self.spec_path)

    @property
    def write_buckets(self) -> int:
        """The online write's entity-hash buckets (``online_write_buckets``, or the store's default)."""
        return self.online_write_buckets or (4 if self.online_store == "redis" else 1)

    @property
    def metric(self) -> str:
        """The gate's primary metric (higher is better)."""
        return self.primary_metric or TASK_DEFAULTS[self.spec.task]["metric"]

    @property
    def floor(self) -> float:
        return self.promotion_floor if self.promotion_floor is not None else TASK_DEFAULTS[self.spec.task]["floor"]

    @property
    def estimator(self) -> str:
        return self.model_type or TASK_DEFAULTS[self.spec.task]["model_type"]

    @property
    def suite_path(self) -> Path:
        """The reviewable expectation suite file (generated part + hand-written additions), next to the spec."""
        return (self.suite_dir or self.spec_path.parent / "expectations") / f"{self.spec.name}.json"

    @property
    def registered_model(self) -> str:
        """The registered model's name in MLflow."""
        return self.model_name or f"airloop_{self.spec.name}"

    @property
    def data_docs_dir(self) -> Path:
        """The GX Data Docs site with every validation run."""
        return self.home / "gx" / "uncommitted" / "data_docs" / "local_site"

    @property
    def landing_dir(self) -> Path:
        return self.home / "landing"

    @property
    def lake_dir(self) -> Path:
        return self.home / "lake"

    @property
    def staging_dir(self) -> Path:
        """Scratch space of the stages (scoring parts, hash buckets); no reader lists it."""
        return self.lake_dir / "_staging"

    @property
    def monitoring_dir(self) -> Path:
        return self.home / "monitoring"

    @property
    def metrics_dir(self) -> Path:
        """The Prometheus textfiles (`*.prom`) node-exporter's textfile collector reads."""
        return self.home / "metrics"

    @property
    def feast_dir(self) -> Path:
        return self.home / "feast"

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{self.home / 'mlflow' / 'mlflow.db'}"

    @property
    def artifact_location(self) -> str | None:
        """Artifacts next to the embedded store; a tracking server (http[s]://) stores them where it is
        configured to (``mlflow server --artifacts-destination s3://...``), so none is set here."""
        if self.tracking_uri.startswith(("http://", "https://")):
            return None
        return (self.home / "mlflow" / "artifacts").as_uri()

    @model_validator(mode="after")
    def _check_serve(self) -> Settings:
        if self.serve_refresh_seconds <= 0 or self.serve_log_flush_seconds <= 0:
            raise ValueError("serve_refresh_seconds and serve_log_flush_seconds must be > 0")
        if self.serve_workers < 1 or self.serve_max_entities < 1:
            raise ValueError("serve_workers and serve_max_entities must be >= 1")
        return self

    @property
    def monitor_floor(self) -> float:
        """The champion's performance floor on labelled days (default: the promotion floor)."""
        return self.performance_floor if self.performance_floor is not None else self.floor

    def as_env(self) -> dict[str, str]:
        """The settings that were set (by the environment or by hand) as ``AIRLOOP_*`` environment
        variables, ``home`` always: for a process started elsewhere, e.g. a training container, which
        keeps its own defaults for the rest (its package paths may differ)."""
        import json

        plain = (str, Path, date, int, float)
        values = {**self.model_dump(exclude_unset=True, exclude_none=True), "home": self.home}
        return {
            f"{ENV_PREFIX}{name.upper()}": str(value) if isinstance(value, plain) else json.dumps(value)
            for name, value in values.items()
        }


def settings_table() -> str:
    """Every setting as a Markdown table (variable, default, meaning): the README's settings section."""
    import json

    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=False) if field.default_factory is None else None
        if isinstance(default, Path):
            default = default.relative_to(PROJECT_DIR) if default.is_relative_to(PROJECT_DIR) else default
        shown = "—" if default is None else f"`{json.dumps(default) if isinstance(default, list | dict) else default}`"
        meaning = " ".join((field.description or "").split()).replace("|", "/")
        rows.append(f"| `{ENV_PREFIX}{name.upper()}` | {shown} | {meaning} |")
    return "\n".join(rows)


def get_settings() -> Settings:
    """Settings from the environment (read on each call, so tests can change it)."""
    return Settings()

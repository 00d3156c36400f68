"""The one typed configuration object. Defaults work out of the box; ``AIRLOOP_*`` env vars override."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from airloop.spec import DatasetSpec, load_spec

PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_DIR = PACKAGE_DIR.parents[1]


# The promotion gate's rules (see airloop.promote); AIRLOOP_GATE_RULES='["floor", ...]' selects them.
GATE_RULES = ("floor", "min_rows", "non_inferiority", "slices", "budget", "validation")

TASK_DEFAULTS = {
    "binary_classification": {"metric": "roc_auc", "floor": 0.6, "model_type": "logistic_regression"},
    "regression": {"metric": "r2", "floor": 0.0, "model_type": "ridge"},
}


class Settings(BaseSettings):
    """Where data lives, which services to use, and the pipeline's rules."""

    model_config = SettingsConfigDict(env_prefix="AIRLOOP_", frozen=True)

    home: Path = Path.home() / ".airloop"
    spec_path: Path = PACKAGE_DIR / "dataset.yaml"
    feature_repo: Path = PROJECT_DIR / "feature_repo"
    suite_dir: Path = PACKAGE_DIR / "expectations"

    # sources: the landing folder, or S3 (bucket/prefix per date; credentials and endpoint from the
    # standard AWS_* environment or the Airflow connection named by s3_conn_id)
    source: Literal["local", "s3"] = "local"
    s3_bucket: str = "airloop-landing"
    s3_prefix: str = "landing/ds={ds}/"
    s3_conn_id: str = "airloop_s3"
    # published outputs (predictions) are also uploaded here when set, e.g. for a warehouse to load
    s3_output_bucket: str | None = None
    s3_output_prefix: str = "{zone}/ds={ds}/"

    # services
    mlflow_tracking_uri: str | None = None  # default: SQLite under home
    model_name: str = "airloop_churn"
    experiment_name: str = "airloop"
    online_store: Literal["sqlite", "redis"] = "sqlite"
    redis_connection: str = "localhost:6379"

    # simulator
    seed: int = 7
    customers: int = 3000
    rows_per_day: int = 600

    # training
    model_type: str | None = None  # default per task: logistic_regression | ridge
    train_window_days: int = 30
    holdout_days: int = 2  # the most recent days, frozen for the promotion gate
    validation_days: int = 1  # the days before the holdout, for model selection
    min_train_days: int = 4
    feature_ttl_days: int = 30
    skew_sample: int = 50  # entities compared online vs offline at each scoring run (0: off)

    # promotion gate
    primary_metric: str | None = None  # higher is better; default per task: roc_auc | r2
    promotion_floor: float | None = None  # default per task: 0.6 (roc_auc) | 0.0 (r2)
    promotion_tolerance: float = 0.01  # non-inferiority margin: CI lower bound of (new - old) >= -tolerance
    gate_rules: list[str] = ["floor", "min_rows", "non_inferiority", "slices", "budget", "validation"]
    gate_min_rows: int = 500  # fewer evaluation rows: refuse rather than guess
    gate_min_slice_rows: int = 50
    gate_confidence: float = 0.95
    gate_bootstrap: int = 1000  # paired bootstrap resamples
    gate_recent_days: int = 7  # labelled validated days after the training window joined to the holdout
    gate_max_model_mb: float = 50.0
    gate_max_latency_ms: float = 50.0  # median single-row predict
    shadow_scoring: bool = False  # also score with the challenger, into predictions_shadow/
    # rows per scoring shard: the daily DAG maps one task per shard, so a large day is scored on all workers
    score_shard_rows: int = 1_000_000

    # monitoring
    drift_current_days: int = 3
    drift_share_threshold: float = 0.3
    retrain_cooldown_days: int = 3

    @model_validator(mode="after")
    def _check_split(self) -> Settings:
        if self.min_train_days <= self.holdout_days + self.validation_days:
            raise ValueError(
                f"min_train_days ({self.min_train_days}) must exceed holdout_days + validation_days "
                f"({self.holdout_days} + {self.validation_days}): training needs at least one day of its own"
            )
        return self

    @model_validator(mode="after")
    def _check_gate(self) -> Settings:
        unknown = sorted(set(self.gate_rules) - set(GATE_RULES))
        if unknown:
            raise ValueError(f"unknown gate rules {unknown}; choose from {list(GATE_RULES)}")
        if not 0.5 < self.gate_confidence < 1:
            raise ValueError(f"gate_confidence must be in (0.5, 1), got {self.gate_confidence}")
        return self

    @cached_property
    def spec(self) -> DatasetSpec:
        return load_spec(self.spec_path)

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
        """The reviewable expectation suite file (generated part + hand-written additions)."""
        return self.suite_dir / f"{self.spec.name}.json"

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

    def partition(self, zone: str, ds: str) -> Path:
        """Folder of one date partition in a zone (raw, validated, quarantine, features, predictions)."""
        return self.lake_dir / zone / f"ds={ds}"

    @property
    def features_dir(self) -> Path:
        """Offline feature table (Feast FileSource): one parquet file per date."""
        return self.lake_dir / "features"

    @property
    def staging_dir(self) -> Path:
        """Scratch space of the stages (scoring parts, hash buckets); no reader lists it."""
        return self.lake_dir / "_staging"

    @property
    def monitoring_dir(self) -> Path:
        return self.home / "monitoring"

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

    # monitoring policy and Evidently's drift tests (issue 6). Methods are Evidently stat-test names
    # (ks, wasserstein, psi, chisquare, jensenshannon, ...); None keeps Evidently's choice by sample size.
    drift_num_method: str | None = None
    drift_cat_method: str | None = None
    drift_num_threshold: float | None = None
    drift_cat_threshold: float | None = None
    drift_column_methods: dict[str, str] = {}  # per-column override, e.g. {"plan": "psi"}
    drift_persist_checks: int = 2  # drift must hold in this many consecutive checks before a retrain
    performance_floor: float | None = None  # retrain when the champion's metric on labelled days is below
    performance_window_days: int = 2  # the most recent labelled, scored days the performance check reads
    min_new_labels: int = 200  # labelled rows after the last training window needed before a retrain
    label_delay_days: int = 1  # the simulator delivers the labels of day D on day D + this
    drift_sample_rows: int = 100_000  # rows per side the drift reports read (a seeded sample above it; 0: all)
    chunk_rows: int = 250_000  # rows per chunk when ingesting, validating and scoring a day (memory stays flat)

    # real-time scoring service (`airloop serve`, issue 19)
    serve_host: str = "127.0.0.1"  # loopback by default; bind 0.0.0.0 only behind a proxy / in a container
    serve_port: int = 8000
    serve_workers: int = 1
    serve_token: SecretStr | None = None  # bearer token POST /predict requires (AIRLOOP_SERVE_TOKEN)
    serve_auth: bool = True  # false: no token asked (say so on purpose; the service logs a warning)
    serve_refresh_seconds: float = 30.0  # the champion alias is re-read this often: a promotion is served within it
    serve_store_timeout_seconds: float = 1.0  # Redis connect/read timeout of the service's online lookups
    serve_max_entities: int = 1000  # entity ids per request
    serve_log_flush_seconds: float = 5.0  # predictions_online/: one part file per flush
    serve_log_max_buffer: int = 1_000_000  # predictions held while the lake is unwritable; older ones are dropped

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


def get_settings() -> Settings:
    """Settings from the environment (read on each call, so tests can change it)."""
    return Settings()

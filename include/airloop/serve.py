"""Serve: real-time scoring of the ``champion`` over HTTP (FastAPI on uvicorn, issue 19).

``POST /predict`` reads the entities' latest features of the spec's feature service from the online store,
scores them with the champion held in memory and returns, per entity, the score, the prediction, the model
version and the feature timestamp. Two fast paths, each with its reference as the fallback: features are
read straight from Redis in the layout Feast writes (``online_read``; else Feast's ``get_online_features``),
and the champion's fitted pipeline is evaluated as numpy arithmetic (``fast_scorer``, checked against the
pipeline when loaded; else the pipeline on a DataFrame). The alias is re-read every
``serve_refresh_seconds``; a new champion is loaded beside the old one and swapped in as one
``(model, version)`` tuple, so a request is always answered by exactly one version, which it names.
Each prediction is also logged to the lake's ``predictions_online`` zone (one Parquet part per flush,
written to a temp file and renamed). The dataset spec has no request-time features: the body holds
entity ids only. No Airflow import; heavy libraries load when the app starts.
"""

from __future__ import annotations

import hmac
import itertools
import logging
import os
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any, NamedTuple

import numpy as np

from airloop import lake
from airloop.config import Settings, get_settings
from airloop.features import get_store
from airloop.model import DECISION_THRESHOLD, predict
from airloop.online_read import redis_reader
from airloop.registry import CHAMPION, load_model, version_by_alias
from airloop.storage import atomic_path

log = logging.getLogger("airloop.serve")

LATENCY_BUCKETS = (0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


# every field of a per-entity result, as the response model lists them (the response is built as JSON directly)
UNSCORED = {
    "score": None,
    "prediction": None,
    "model_version": None,
    "feature_timestamp": None,
    "features_stale": False,
    "error": None,
    "features": None,
}


class Unavailable(RuntimeError):
    """The service cannot answer now (no champion, online store unreachable): HTTP 503."""


class ServedModel(NamedTuple):
    """What answers a request: swapped as one tuple, never field by field."""

    version: str
    run_id: str
    model: Any
    score: Any  # feature columns -> scores: fast_scorer's, or plain_scorer's where it does not cover the model


# --- schemas from the dataset spec ---------------------------------------------------------------


def build_schemas(settings: Settings) -> tuple[type, type, type]:
    """The request, per-entity result and response models, named and typed from the dataset spec."""
    from typing import Annotated

    from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, create_model

    spec = settings.spec
    title = "".join(part.title() for part in spec.name.split("_"))
    types = {"int": int, "float": float, "category": str}
    feature_fields: dict[str, Any] = {
        f.name: (
            types[f.dtype] | None,
            Field(None, description=f"categories: {f.categories}" if f.categories else f"range [{f.min}, {f.max}]"),
        )
        for f in spec.features
    }
    for a in spec.aggregates:
        feature_fields[a.name] = (float | None, Field(None, description=f"{a.fn} of {a.column}, {a.window_days} days"))
    features = create_model(f"{title}Features", **feature_fields)
    key, key_type = (StrictStr, str) if spec.entity_dtype == "string" else (StrictInt, int)
    ids = Annotated[list[key], Field(min_length=1, max_length=settings.serve_max_entities)]
    request = create_model(
        f"{title}PredictRequest",
        __config__=ConfigDict(extra="forbid"),
        **{
            spec.entity: (
                key | ids,
                Field(description=f"one {spec.entity} or a list of up to {settings.serve_max_entities}"),
            ),
            "return_features": (bool, Field(False, description="also return the feature values that were scored")),
        },
    )
    output = "P(positive)" if spec.task == "binary_classification" else "predicted value"
    result = create_model(
        f"{title}Prediction",
        **{
            spec.entity: (key_type, ...),
            "score": (float | None, Field(None, description=output)),
            "prediction": (
                (int | None) if spec.task == "binary_classification" else (float | None),
                Field(
                    None,
                    description=f"score >= {DECISION_THRESHOLD}"
                    if spec.task == "binary_classification"
                    else "the value",
                ),
            ),
            "model_version": (str | None, None),
            "feature_timestamp": (datetime | None, Field(None, description="event time of the features scored")),
            "features_stale": (
                bool,
                Field(False, description="features older than the feature view's TTL; scored all the same"),
            ),
            "error": (str | None, Field(None, description="why this entity got no score")),
            "features": (features | None, None),
        },
    )

    class _Response(BaseModel):
        model_name: str
        model_version: str
        predictions: list[result]  # type: ignore[valid-type]

    response = create_model(f"{title}PredictResponse", __base__=_Response)
    return request, result, response


# --- the prediction log (predictions_online zone) --------------------------------------------------


class PredictionLog:
    """Buffer of served predictions, written as one Parquet part per flush and day partition:
    ``part-<time>-<pid>-<seq>.parquet`` in the day's ``predictions_online`` partition via temp file + rename, so a
    reader never sees a partial file and several worker processes never write the same name."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._rows: list[tuple] = []
        self._lock = threading.Lock()
        self._seq = itertools.count()
        self.dropped = 0

    def append(self, rows: list[tuple]) -> None:
        with self._lock:
            self._rows.extend(rows)
            excess = len(self._rows) - self.settings.serve_log_max_buffer
            if excess > 0:  # the lake has been unwritable for long: keep the newest, count the loss
                del self._rows[:excess]
                self.dropped += excess

    def flush(self) -> list[str]:
        """Write what is buffered; on failure the rows stay buffered for the next flush."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        with self._lock:
            rows, self._rows = self._rows, []
        if not rows:
            return []
        spec = self.settings.spec
        # no "ds" column: the partition folder holds it (a hive-partitioned read of the zone adds it back)
        names = [spec.entity, spec.timestamp, "served_at", "score", "prediction"]
        names += ["model_name", "model_version", "model_run_id", "request_id"]
        written: list[str] = []
        try:
            by_day: dict[str, list[tuple]] = {}
            for row in rows:
                by_day.setdefault(row[3], []).append(row)
            for ds, part in sorted(by_day.items()):
                cols = list(zip(*part, strict=True))
                table = pa.table(
                    {
                        names[0]: pa.array(cols[0], pa.int64()),
                        names[1]: pa.array(cols[1], pa.timestamp("us", tz="UTC")),
                        names[2]: pa.array(cols[2], pa.timestamp("us", tz="UTC")),
                        **{n: pa.array(c) for n, c in zip(names[3:], cols[4:], strict=True)},
                    }
                )
                stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
                target = (
                    lake.partition(self.settings, lake.ONLINE, ds)
                    / f"part-{stamp}-{os.getpid()}-{next(self._seq):06d}.parquet"
                )
                with atomic_path(target) as tmp:
                    pq.write_table(table, tmp)
                written.append(str(target))
                by_day[ds] = []
        except Exception:
            left = [row for part in by_day.values() for row in part]
            with self._lock:
                self._rows[:0] = left
            raise
        return written


# --- the model's fast path ---------------------------------------------------------------------------

PROBE_ROWS = 256  # rows of the self-check a fast path must pass before it serves
TOLERANCE = 1e-12


def fast_scorer(settings: Settings, pipe: Any) -> tuple[Any, str]:
    """``predict(settings, pipe, frame)`` as numpy arithmetic on the request's columns, for the pipelines
    ``train.build_pipeline`` makes (median imputer + scaler, one-hot encoder, then logistic regression,
    ridge or histogram gradient boosting): sklearn's per-call checks and pandas handling cost ~3 ms on one
    row, this ~0.1 ms. It is served only after matching the pipeline to 1e-12 on probe rows around the
    fitted statistics, with missing values and unknown categories; otherwise (None, why): the pipeline."""
    try:
        score = _FastPipeline(settings, pipe)
        probe = _probe(settings, score, PROBE_ROWS)
        import pandas as pd

        want = predict(settings, pipe, pd.DataFrame(probe, columns=settings.spec.model_features))
        got = score(probe)
        worst = float(np.max(np.abs(got - want) / np.maximum(1.0, np.abs(want))))
        if not worst <= TOLERANCE:
            return None, f"it differs from the pipeline by {worst:.3g} on probe rows (tolerance {TOLERANCE})"
        return score, ""
    except _NotCovered as exc:
        return None, str(exc)


class _NotCovered(ValueError):
    """The fitted pipeline is not one the fast path knows."""


def _need(ok: bool, what: str) -> None:
    if not ok:
        raise _NotCovered(what)


class _FastPipeline:
    """The fitted transforms and estimator of ``train.build_pipeline``, read from their fitted attributes."""

    def __init__(self, settings: Settings, pipe: Any) -> None:
        from sklearn.compose import ColumnTransformer
        from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
        from sklearn.impute import SimpleImputer
        from sklearn.linear_model import LogisticRegression, Ridge
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import OneHotEncoder, StandardScaler

        steps = [n for n, _ in pipe.steps] if type(pipe) is Pipeline else type(pipe).__name__
        _need(steps == ["pre", "model"], f"a pipeline of steps {steps} (covered: pre, model)")
        pre, est = pipe.named_steps["pre"], pipe.named_steps["model"]
        _need(type(pre) is ColumnTransformer, f"preprocessing {type(pre).__name__}")
        parts = {n: (t, list(c)) for n, t, c in pre.transformers_ if not (n == "remainder" and t == "drop")}
        _need(list(parts) == ["num", "cat"], f"transformers {list(parts)} (covered: num, cat)")
        (num, self.numeric), (ohe, self.categorical) = parts["num"], parts["cat"]
        _need(type(num) is Pipeline and [type(t) for _, t in num.steps] == [SimpleImputer, StandardScaler], "num")
        imputer, scaler = num.steps[0][1], num.steps[1][1]
        _need(not imputer.add_indicator and np.isnan(imputer.missing_values), "imputer options")
        _need(bool(np.isfinite(imputer.statistics_).all()), "an all-missing numeric column at fit time")
        _need(scaler.mean_ is not None and scaler.scale_ is not None, "scaler without mean or scale")
        self.fill, self.mean, self.scale = imputer.statistics_, scaler.mean_, scaler.scale_
        _need(type(ohe) is OneHotEncoder and ohe.handle_unknown == "ignore", "categorical encoder options")
        _need(ohe.drop_idx_ is None and not ohe._infrequent_enabled, "categorical encoder drop/infrequent")
        import pandas as pd

        missing = ohe.transform(pd.DataFrame({c: [None] for c in self.categorical}))  # what None encodes to
        missing = np.asarray(missing.toarray() if hasattr(missing, "toarray") else missing, dtype="float64").ravel()
        self.blocks = []  # per column: offset in X, {category: index}, the encoding of a missing value
        start = 0
        for cats in ohe.categories_:
            index = {c: i for i, c in enumerate(cats) if isinstance(c, str)}
            self.blocks.append((len(self.numeric) + start, index, missing[start : start + len(cats)]))
            start += len(cats)
        self.width = len(self.numeric) + start
        self.classify = settings.spec.task == "binary_classification"
        if type(est) in (LogisticRegression, Ridge):
            if type(est) is LogisticRegression:
                _need(len(est.classes_) == 2, "logistic regression with more than two classes")
            _need(est.coef_.shape[-1] == self.width and est.coef_.size == self.width, "linear model shape")
            self.estimator = self._linear(est)
        elif type(est) in (HistGradientBoostingClassifier, HistGradientBoostingRegressor):
            self.estimator = _Trees(est, self.width)
        else:
            raise _NotCovered(f"estimator {type(est).__name__}")

    def _linear(self, est: Any) -> Any:
        from scipy.special import expit

        coef, intercept = est.coef_, est.intercept_
        if self.classify:  # LogisticRegression.predict_proba(X)[:, 1]: expit of the decision function
            return lambda X: expit((X @ coef.T + intercept).reshape(-1))
        return lambda X: X @ coef + intercept  # Ridge.predict

    def __call__(self, cols: dict[str, list]) -> np.ndarray:
        """Scores of the rows in ``cols`` (feature -> values, ``None`` for a missing value)."""
        n = len(cols[self.numeric[0]])
        X = np.empty((n, self.width), dtype="float64")
        num = np.array([cols[f] for f in self.numeric], dtype="float64").T
        num = np.where(np.isnan(num), self.fill, num)  # SimpleImputer
        X[:, : len(self.numeric)] = (num - self.mean) / self.scale  # StandardScaler
        X[:, len(self.numeric) :] = 0.0
        for f, (offset, index, missing) in zip(self.categorical, self.blocks, strict=True):
            for i, value in enumerate(cols[f]):
                if value is None:
                    X[i, offset : offset + len(missing)] = missing
                elif (j := index.get(value)) is not None:
                    X[i, offset + j] = 1.0
        return self.estimator(X)


class _Trees:
    """A histogram gradient boosting model's trees walked for all rows and trees at once: the baseline plus
    each tree's leaf value, added in tree order as sklearn adds them, through its link (expit or identity)."""

    def __init__(self, est: Any, width: int) -> None:
        _need(est.n_trees_per_iteration_ == 1, "more than one tree per iteration")
        _need(type(est._loss).__name__ in ("HalfBinomialLoss", "HalfSquaredError"), f"loss {est.loss}")
        _need(getattr(est, "n_features_in_", width) == width, "tree model input width")
        nodes = [p.nodes for it in est._predictors for p in it]
        _need(not any(n["is_categorical"].any() for n in nodes), "categorical splits")
        # deepest trees first, so step k walks only the trees deeper than k; scores summed back in tree order
        depths = np.array([int(n["depth"].max()) for n in nodes])
        order = np.argsort(-depths, kind="stable")
        nodes, self.unsort = [nodes[i] for i in order], np.argsort(order)
        self.steps = [int((depths > k).sum()) for k in range(int(depths.max()))]
        sizes = np.array([len(n) for n in nodes])
        self.roots = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        allnodes = np.concatenate(nodes)
        here, base = np.arange(len(allnodes)), np.repeat(self.roots, sizes)
        leaf = allnodes["is_leaf"].astype(bool)
        # children[2 * node + went_left]; a leaf is its own child (a row may stop early in a tree)
        left = np.where(leaf, here, allnodes["left"].astype(np.int64) + base)
        right = np.where(leaf, here, allnodes["right"].astype(np.int64) + base)
        self.children = np.stack([right, left], axis=1).ravel()
        self.feature = np.where(leaf, 0, allnodes["feature_idx"]).astype(np.int64)
        self.threshold = np.where(leaf, np.inf, allnodes["num_threshold"])
        self.value = allnodes["value"]
        self.width = width
        self.baseline = float(np.asarray(est._baseline_prediction).ravel()[0])
        self.classify = type(est._loss).__name__ == "HalfBinomialLoss"

    def __call__(self, X: np.ndarray) -> np.ndarray:
        """Raw scores through the link. ``X`` has no NaN (imputed), so ``missing_go_to_left`` never applies:
        ``x <= threshold`` goes left, as in sklearn's ``_predict_one_from_raw_data``."""
        from scipy.special import expit

        n = len(X)
        flat = np.ascontiguousarray(X).ravel()
        row = (np.arange(n) * self.width)[:, None]
        node = np.tile(self.roots, (n, 1))
        for m in self.steps:
            walking = node[:, :m]
            went_left = flat[row + self.feature[walking]] <= self.threshold[walking]
            node[:, :m] = self.children[2 * walking + went_left]
        terms = np.concatenate([np.full((n, 1), self.baseline), self.value[node][:, self.unsort]], axis=1)
        raw = np.cumsum(terms, axis=1)[:, -1]  # sequential, in tree order: sklearn's sum to the last bit
        return expit(raw) if self.classify else raw


def _probe(settings: Settings, fast: _FastPipeline, n: int) -> dict[str, list]:
    """Rows around the fitted statistics (some missing), every category, missing and unknown ones."""
    rng = np.random.default_rng(0)
    cols: dict[str, list] = {}
    for f, mean, scale in zip(fast.numeric, fast.mean, fast.scale, strict=True):
        values = mean + scale * rng.normal(0, 1.5, n)
        cols[f] = [None if rng.random() < 0.1 else float(v) for v in values]
    for f, (_, index, _) in zip(fast.categorical, fast.blocks, strict=True):
        choices = [*index, None, "\x00not-a-category"]
        cols[f] = [choices[i] for i in rng.integers(0, len(choices), n)]
    return cols


def plain_scorer(settings: Settings, pipe: Any) -> Any:
    """The pipeline itself on a one-request DataFrame (the fallback of ``fast_scorer``)."""
    import pandas as pd

    spec = settings.spec

    def score(cols: dict[str, list]) -> np.ndarray:
        import sklearn

        data: dict[str, Any] = dict(cols)
        for f in spec.model_features:
            if f not in spec.categorical_features:
                data[f] = np.array(cols[f], dtype="float64")  # None -> NaN, imputed by the pipeline
        # without sklearn's input checks (~1.5 ms of a one-row call): missing values are still imputed
        with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
            return predict(settings, pipe, pd.DataFrame(data, columns=spec.model_features))

    return score


# --- the service -----------------------------------------------------------------------------------


class ScoringService:
    """Online features (Feast) + the champion in memory + the alias watcher + the prediction log."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.spec = settings.spec
        self.store_settings = _with_timeouts(settings)
        self.store = get_store(self.store_settings)
        _fail_fast(self.store, settings)
        self._feature_service: Any = None
        self._reader: Any = None
        self._current: ServedModel | None = None
        self._swap_lock = threading.Lock()  # one loader at a time; readers never take it
        self.log = PredictionLog(settings)
        self.store_errors = _store_errors(settings)
        self.last_refresh_error: str | None = None
        self.metrics = Metrics()

    @property
    def current(self) -> ServedModel | None:
        return self._current

    def feature_service(self) -> Any:
        if self._feature_service is None:
            name = self.settings.spec.feature_service_name
            try:
                self._feature_service = self.store.get_feature_service(name)
            except self.store_errors:
                raise
            except Exception as exc:  # not applied yet: nothing materialized
                raise Unavailable(
                    f"feature service {name!r} is not in the Feast registry ({exc}): materialize a day first"
                ) from exc
        return self._feature_service

    def refresh(self) -> bool:
        """Follow the ``champion`` alias: load a new version beside the current one, then swap the
        tuple in one assignment. Returns True when the served version changed."""
        with self._swap_lock:
            mv = version_by_alias(self.settings, CHAMPION)
            if mv is None:
                if self._current is None:
                    raise Unavailable(
                        f"no '{CHAMPION}' version of {self.settings.registered_model} in the registry yet"
                    )
                return False  # alias removed by hand: keep serving what we have rather than nothing
            version = str(mv.version)
            if self._current is not None and self._current.version == version:
                return False
            model = load_model(self.settings, version)
            score, why = fast_scorer(self.settings, model) if self.settings.serve_fast_path else (None, "")
            if score is None:
                score = plain_scorer(self.settings, model)
                log.warning("version %s scores through its sklearn pipeline: %s", version, why or "fast path off")
            old = self._current
            self._current = ServedModel(version, mv.run_id, model, score)
            self.metrics.model_version.set(float(version) if version.isdigit() else -1)
            log.warning("serving %s version %s (was %s)", self.settings.registered_model, version, old and old.version)
            return True

    def reader(self) -> Any:
        """Entity ids -> what Feast's ``get_online_features(...).to_dict(include_event_timestamps=True)`` gives:
        read straight from Redis where ``online_read`` covers the store, else through Feast (logged once)."""
        if self._reader is None:
            service = self.feature_service()
            fast, why = (None, "AIRLOOP_SERVE_FAST_PATH=false")
            if self.settings.serve_fast_path:
                fast, why = redis_reader(self.store, service)
            if fast is not None:
                log.info("online features read straight from Redis (the layout online_write covers)")
                self._reader = fast.read
            else:
                log.warning("online features through Feast's get_online_features: %s", why)
                entity, store = self.spec.entity, self.store
                self._reader = lambda ids: store.get_online_features(
                    features=service, entity_rows={entity: ids}
                ).to_dict(include_event_timestamps=True)
        return self._reader

    def lookup(self, ids: list[int]) -> dict[str, list]:
        """Latest feature values of ``ids`` from the online store, with their event times
        (``<feature>__ts``, epoch seconds; 0 when the entity has no row); Unavailable when the store
        does not answer."""
        try:
            return self.reader()(ids)
        except self.store_errors as exc:
            raise Unavailable(f"online store unreachable ({self._store_name()}): {exc}") from exc

    def check_ready(self) -> dict:
        """Model loaded and the online store answering a lookup; Unavailable otherwise."""
        current = self._current
        if current is None:
            raise Unavailable(self.last_refresh_error or f"no '{CHAMPION}' model loaded yet")
        self.lookup([0])
        return {"status": "ready", "model_name": self.settings.registered_model, "model_version": current.version}

    def predict(self, ids: list[int], return_features: bool = False) -> dict:
        """Score ``ids`` with one snapshot of the champion; an entity without online features gets
        an error of its own. Appends every scored entity to the prediction log."""
        served = self._current  # one read: this request's model and version, whatever swaps meanwhile
        if served is None:
            raise Unavailable(self.last_refresh_error or f"no '{CHAMPION}' model loaded yet")
        spec = self.spec
        values = self.lookup(ids)
        n = len(ids)
        # Feast's Redis store marks a missing entity PRESENT with null values: its event time 0 tells
        stamps = {id(ts): ts for ts in (values[f"{f}__ts"] for f in spec.model_features)}  # one per view
        newest = list(map(max, zip(*stamps.values(), strict=True)))
        rows = [i for i in range(n) if newest[i] > 0]
        scores = np.array([], dtype="float64")
        if rows:
            cols = {f: [values[f][i] for i in rows] for f in spec.model_features}
            scores = served.score(cols)
        now = datetime.now(UTC)
        ttl = self.settings.feature_ttl_days * 86_400  # the feature view's TTL (feature_repo/definitions.py)
        ds, request_id = now.date().isoformat(), uuid.uuid4().hex
        classify = spec.task == "binary_classification"
        out, logged = [], []
        score_of = dict(zip(rows, scores.tolist(), strict=True))
        for i, entity in enumerate(ids):
            if newest[i] == 0:
                error = f"{spec.entity} {entity} has no features in the online store"
                out.append({spec.entity: entity, **UNSCORED, "error": error})
                continue
            score = score_of[i]
            pred = int(score >= DECISION_THRESHOLD) if classify else score
            ts = datetime.fromtimestamp(newest[i], UTC)
            item = {
                spec.entity: entity,
                "score": score,
                "prediction": pred,
                "model_version": served.version,
                "feature_timestamp": ts,
                "features_stale": now.timestamp() - newest[i] > ttl,
                "error": None,
                "features": {f: values[f][i] for f in spec.model_features} if return_features else None,
            }
            out.append(item)
            logged.append(
                (
                    entity,
                    ts,
                    now,
                    ds,
                    score,
                    pred,
                    self.settings.registered_model,
                    served.version,
                    served.run_id,
                    request_id,
                )
            )
        self.log.append(logged)
        self.metrics.entities.inc(len(ids))
        self.metrics.unknown.inc(n - len(rows))
        return {"model_name": self.settings.registered_model, "model_version": served.version, "predictions": out}

    def _store_name(self) -> str:
        if self.settings.online_store == "redis":
            return f"redis {self.settings.redis_connection.split(',')[0]}"  # host:port, never the password
        return f"sqlite {self.settings.feast_dir / 'online.db'}"


def _with_timeouts(settings: Settings) -> Settings:
    """Redis lookups that give up after ``serve_store_timeout_seconds`` (unless the connection string
    sets its own), so an unreachable store is a prompt 503 rather than a hung request."""
    if settings.online_store != "redis":
        return settings
    conn = settings.redis_connection
    t = settings.serve_store_timeout_seconds
    for key in ("socket_timeout", "socket_connect_timeout"):
        if f"{key}=" not in conn:
            conn += f",{key}={t}"
    return settings.model_copy(update={"redis_connection": conn})


def _fail_fast(store: Any, settings: Settings) -> None:
    """One retry without backoff for the service's Redis client: redis-py retries a refused connection
    3 times with exponential backoff (up to ~8 s), too long for a 503 a caller can act on. Feast has no
    setting for it, so the client Feast built is reached through its provider (internal API: if it
    moves, the service keeps redis-py's default and says so)."""
    if settings.online_store != "redis":
        return
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    try:
        online = store._get_provider().online_store
        online._get_client(store.config.online_store).set_retry(Retry(NoBackoff(), 1))
    except AttributeError as exc:
        log.warning("could not shorten Redis retries (Feast internals changed: %s); an outage answers slower", exc)


def _store_errors(settings: Settings) -> tuple[type[BaseException], ...]:
    """The exceptions meaning "the online store did not answer"."""
    import sqlite3

    errors: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError, sqlite3.OperationalError)
    if settings.online_store == "redis":
        import redis

        errors += (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
    return errors


class Metrics:
    """Prometheus metrics of one service instance (its own registry, so apps never collide)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter(
            "airloop_serve_requests", "HTTP requests by path and status", ["path", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "airloop_serve_request_seconds",
            "request latency",
            ["path"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.errors = Counter("airloop_serve_errors", "failures by kind", ["kind"], registry=self.registry)
        self.entities = Counter("airloop_serve_entities", "entity ids asked for", registry=self.registry)
        self.unknown = Counter("airloop_serve_unknown_entities", "entity ids without features", registry=self.registry)
        self.model_version = Gauge("airloop_serve_model_version", "the registry version served", registry=self.registry)
        self.model_version.set(0)
        self.log_dropped = Gauge("airloop_serve_log_dropped", "predictions never logged", registry=self.registry)
        self._children: dict[tuple[str, int], tuple[Any, Any]] = {}

    def observe(self, path: str, status: int, seconds: float) -> None:
        """One request: its latency and its count by path and status (label lookups cached)."""
        child = self._children.get((path, status))
        if child is None:
            child = self._children[path, status] = (
                self.latency.labels(path),
                self.requests.labels(path, str(status)),
            )
        child[0].observe(seconds)
        child[1].inc()


# --- background work: the alias watcher and the log flusher --------------------------------------


def _every(seconds: float, stop: threading.Event, work: Any, kind: str, metrics: Metrics) -> None:
    while not stop.wait(seconds):
        try:
            work()
        except Exception as exc:  # keep serving the current model / buffer; count it and say why
            metrics.errors.labels(kind).inc()
            log.error("%s failed (will retry in %.0f s): %s", kind, seconds, exc)


# --- the app ---------------------------------------------------------------------------------------


def create_app(settings: Settings | None = None) -> Any:
    """The FastAPI app (uvicorn factory: ``airloop.serve:create_app``)."""
    from contextlib import asynccontextmanager

    from fastapi import Depends, FastAPI, HTTPException, Request
    from fastapi.responses import JSONResponse, Response
    from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
    from pydantic_core import to_json

    settings = settings or get_settings()
    if settings.serve_auth and settings.serve_token is None:
        raise ValueError(
            "the scoring service needs a bearer token: set AIRLOOP_SERVE_TOKEN "
            "(or AIRLOOP_SERVE_AUTH=false to run without one, on purpose)"
        )
    if not settings.serve_auth:
        log.warning("AIRLOOP_SERVE_AUTH=false: /predict answers anyone who can reach %s", settings.serve_host)
    request_model, _, response_model = build_schemas(settings)
    spec = settings.spec
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # noqa: ANN202
        service = ScoringService(settings)
        state["service"] = service
        try:
            service.refresh()
        except Exception as exc:  # the watcher keeps trying; /ready says why meanwhile
            service.last_refresh_error = f"no champion loaded: {exc}"
            log.error("%s", service.last_refresh_error)

        def refresh() -> None:
            try:
                service.refresh()
                service.last_refresh_error = None
            except Exception as exc:
                service.last_refresh_error = f"could not follow the '{CHAMPION}' alias: {exc}"
                raise

        def flush() -> None:
            service.log.flush()
            service.metrics.log_dropped.set(service.log.dropped)

        stop = threading.Event()
        threads = [
            threading.Thread(
                target=_every,
                args=(settings.serve_refresh_seconds, stop, refresh, "refresh", service.metrics),
                daemon=True,
            ),
            threading.Thread(
                target=_every,
                args=(settings.serve_log_flush_seconds, stop, flush, "log_flush", service.metrics),
                daemon=True,
            ),
        ]
        for t in threads:
            t.start()
        yield
        stop.set()
        for t in threads:
            t.join(timeout=10)
        service.log.flush()

    app = FastAPI(
        title="airloop scoring service",
        version="1",
        description=f"Real-time scores of `{settings.registered_model}@{CHAMPION}` ({spec.name}, {spec.task}).",
        lifespan=lifespan,
    )
    bearer = HTTPBearer(auto_error=False, description="AIRLOOP_SERVE_TOKEN")

    def service() -> ScoringService:
        return state["service"]

    async def authorize(creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:  # noqa: B008
        # async: no blocking work, so FastAPI runs it on the event loop rather than handing it to a thread
        if not settings.serve_auth:
            return
        expected = settings.serve_token.get_secret_value().encode()
        if creds is None or not hmac.compare_digest(creds.credentials.encode(), expected):
            state["service"].metrics.errors.labels("auth").inc()
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    known_paths = {"/predict", "/health", "/ready", "/metrics"}

    class Measure:
        """Request count and latency per path (a plain ASGI middleware: cheaper than BaseHTTPMiddleware)."""

        def __init__(self, app: Any) -> None:
            self.app = app

        async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
            svc = state.get("service")
            if scope["type"] != "http" or svc is None:
                return await self.app(scope, receive, send)
            t0, status = time.perf_counter(), [500]

            async def send_status(message: dict) -> None:
                if message["type"] == "http.response.start":
                    status[0] = message["status"]
                await send(message)

            try:
                await self.app(scope, receive, send_status)
            finally:
                path = scope["path"] if scope["path"] in known_paths else "other"
                svc.metrics.observe(path, status[0], time.perf_counter() - t0)

    app.add_middleware(Measure)

    @app.exception_handler(Unavailable)
    async def unavailable(request: Request, exc: Unavailable) -> JSONResponse:
        state["service"].metrics.errors.labels("unavailable").inc()
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "1"})

    def predict_endpoint(body: Any) -> Any:
        """Score one or many entities with the champion; an unknown entity is an error of its own."""
        ids = getattr(body, spec.entity)
        out = service().predict([ids] if isinstance(ids, (int, str)) else ids, body.return_features)
        # JSON in one call (pydantic-core): FastAPI's validation of the result against the response model
        # costs more than the scoring; the model still documents the response (/docs)
        return Response(to_json(out), media_type="application/json")

    predict_endpoint.__annotations__["body"] = request_model  # built at runtime: not a name FastAPI can resolve
    app.post("/predict", response_model=response_model, dependencies=[Depends(authorize)])(predict_endpoint)

    @app.get("/health")
    def health() -> dict:
        """The process is up (no dependency checked)."""
        return {"status": "ok"}

    @app.get("/ready")
    def ready() -> dict:
        """A champion is loaded and the online store answers a lookup; 503 with the reason otherwise."""
        return service().check_ready()

    @app.get("/metrics", response_class=Response)
    def metrics() -> Any:
        """Prometheus metrics of this process."""
        return Response(generate_latest(service().metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def serve(settings: Settings, host: str | None = None, port: int | None = None, workers: int | None = None) -> None:
    """Run the service with uvicorn (blocks). Each worker process loads its own champion and writes its
    own prediction-log parts; its metrics are its own."""
    import uvicorn

    create_app(settings)  # fail fast (token, spec) before uvicorn forks workers
    uvicorn.run(
        "airloop.serve:create_app",
        factory=True,
        host=host or settings.serve_host,
        port=port or settings.serve_port,
        workers=workers or settings.serve_workers,
        log_level="warning",
        access_log=False,
    )

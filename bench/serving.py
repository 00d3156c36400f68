"""Real-time scoring: `airloop serve` against the two-hop peer baseline a user would chain by hand,
`feast serve` (online features) then `mlflow models serve --env-manager local` (the same champion),
all on loopback with Redis, driven by wrk (Debian) with Lua body scripts, in the same run.

The baseline's two hops are driven one at a time with the same wrk settings; a client chaining them
waits for both, so its latency is taken as the sum of the hops' percentiles (an upper bound of the
chain's percentile) and its throughput as 1 / (1/rps_feast + 1/rps_mlflow) (the two servers share the
same cores). MLflow's sklearn pyfunc returns the class, not P(positive): same work, less output.
`airloop_plain` is the same service with AIRLOOP_SERVE_FAST_PATH=false (Feast's get_online_features, the
sklearn pipeline): what its two fast paths buy, in the same run. Each wrk figure carries the 1-minute load
average read when it ended.
Targets (2 cores, Redis): 1 entity p99 < 10 ms at ~200 req/s; 100 entities p99 < 25 ms; >= 3x the
baseline's throughput."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
REDIS_DB = 13
TOKEN = "bench-serving"
START = date(2026, 1, 1)

# wrk prints one JSON line with the percentiles it measured (microseconds) at the end of a run
DONE = """
done = function(summary, latency, requests)
  io.write(string.format('WRK {"requests": %d, "seconds": %f, "errors": %d, "non2xx": %d, '
    .. '"p50": %f, "p95": %f, "p99": %f}\\n', summary.requests, summary.duration / 1e6,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status, latency:percentile(50) / 1e3, latency:percentile(95) / 1e3,
    latency:percentile(99) / 1e3))
end
"""


def _lua(path: str, bodies: list[str], headers: dict[str, str], delay_ms: float) -> str:
    lines = ['wrk.method = "POST"', 'wrk.headers["Content-Type"] = "application/json"']
    lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items()]
    lines.append("bodies = {" + ", ".join(json.dumps(b) for b in bodies) + "}")
    lines.append("i = 0")
    lines.append(f'request = function() i = i % #bodies + 1 return wrk.format(nil, "{path}", nil, bodies[i]) end')
    if delay_ms:
        lines.append(f"delay = function() return {delay_ms} end")
    return "\n".join(lines) + "\n" + DONE


def wrk(url: str, path: str, bodies: list[str], connections: int, seconds: float, headers=None, delay_ms=0.0) -> dict:
    """One wrk run (1 thread); p50/p95/p99 in ms, req/s, and failures (socket errors + non-2xx)."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(_lua(path, bodies, headers or {}, delay_ms))
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "5s", "-s", f.name, url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    os.unlink(f.name)
    r = json.loads(next(line for line in out.splitlines() if line.startswith("WRK "))[4:])
    r["rps"] = r["requests"] / r["seconds"]
    r["load"] = os.getloadavg()[0]  # the machine is shared: each figure with the load it was measured at
    return r


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str, proc: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[:3]} exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"{url} not up in {timeout} s: {log.read_text()[-2000:]}")


def prepare(days: int) -> dict[str, str]:
    """A champion and a Redis online store filled by the real pipeline (Redis db 13, flushed first)."""
    import redis

    from airloop.config import get_settings
    from airloop.features import materialize_features
    from airloop.ingest import ingest_batch
    from airloop.labels import collect_labels
    from airloop.promote import evaluate_gate
    from airloop.simulate import simulate
    from airloop.train import train_model
    from airloop.validate import validate_batch

    redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB).flushdb()
    env = {
        "AIRLOOP_HOME": tempfile.mkdtemp(prefix="airloop-bench-serving-"),
        "AIRLOOP_ONLINE_STORE": "redis",
        "AIRLOOP_REDIS_CONNECTION": f"127.0.0.1:6379,db={REDIS_DB}",
        "AIRLOOP_SERVE_TOKEN": TOKEN,
        "AIRLOOP_GATE_BOOTSTRAP": "200",
    }
    os.environ.update(env)
    s = get_settings()
    dates = [(START + timedelta(days=i)).isoformat() for i in range(days)]
    simulate(START, days, s)
    for ds in dates:
        ingest_batch(s, ds)
        validate_batch(s, ds)
        materialize_features(s, ds)
    collect_labels(s, dates[-1])  # the label feed: what has arrived by the last day
    version = train_model(s, dates[-1])["version"]
    if evaluate_gate(s, version)["decision"] != "promoted":
        evaluate_gate(s, version, force_reason="bench/serving: a champion to serve", actor="bench")
    return env


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=8, help="per wrk run (keep it short: shared machine)")
    parser.add_argument("--days", type=int, default=6)
    parser.add_argument("--workers", type=int, default=2, help="airloop serve worker processes (2 cores: 2)")
    parser.add_argument("--connections", type=int, default=8, help="closed-loop throughput runs")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (apt-get install wrk)")
    env = {**os.environ, **prepare(args.days)}
    from airloop.config import get_settings
    from airloop.features import feast_env

    s = get_settings()
    spec = s.spec
    env.update(feast_env(s))
    env.update(MLFLOW_TRACKING_URI=s.tracking_uri, MLFLOW_REGISTRY_URI=s.tracking_uri)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"  # mlflow models serve execs `uvicorn` from PATH
    from airloop import lake

    features = __import__("pandas").read_parquet(lake.data_file(s, lake.FEATURES, lake.dates(s, lake.FEATURES)[-1]))
    ids = features[spec.entity].drop_duplicates().astype(int).tolist()
    ports = {name: _free_port() for name in ("airloop", "airloop_plain", "feast", "mlflow")}
    home = Path(env["AIRLOOP_HOME"])
    commands = {
        "airloop": [str(BIN / "airloop"), "serve", "--port", str(ports["airloop"]), "--workers", str(args.workers)],
        # the same service without its fast paths: Feast's get_online_features and the sklearn pipeline
        "airloop_plain": [str(BIN / "airloop"), "serve", "--port", str(ports["airloop_plain"])]
        + ["--workers", str(args.workers)],
        "feast": [str(BIN / "feast"), "-c", str(s.feature_repo), "serve", "--host", "127.0.0.1"]
        + ["--port", str(ports["feast"]), "--no-access-log", "--max-requests", "10000000"],
        "mlflow": [str(BIN / "mlflow"), "models", "serve", "-m", f"models:/{s.registered_model}@champion"]
        + ["--env-manager", "local", "--host", "127.0.0.1", "--port", str(ports["mlflow"]), "--workers", "1"],
    }
    procs = {}
    try:
        for name, cmd in commands.items():
            log = home / f"{name}.log"
            own = {**env, "AIRLOOP_SERVE_FAST_PATH": "false"} if name == "airloop_plain" else env
            procs[name] = (subprocess.Popen(cmd, env=own, stdout=log.open("w"), stderr=subprocess.STDOUT), log)
        url = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        _wait(f"{url['airloop']}/ready", *procs["airloop"])
        _wait(f"{url['airloop_plain']}/ready", *procs["airloop_plain"])
        _wait(f"{url['feast']}/health", *procs["feast"])
        _wait(f"{url['mlflow']}/health", *procs["mlflow"])
        return _measure(args, s, ids, features, url)
    finally:
        for proc, _ in procs.values():
            proc.terminate()
        for proc, _ in procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        import redis

        redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB).flushdb()


def _measure(args: argparse.Namespace, s, ids: list[int], features, url: dict[str, str]) -> dict:
    import random

    spec = s.spec
    rng = random.Random(0)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    cols = spec.model_features
    rows = features.drop_duplicates(spec.entity).set_index(spec.entity)[cols]
    out: dict = {"workers": args.workers, "seconds": args.seconds, "connections": args.connections}
    for n in (1, 100):
        picks = [rng.sample(ids, n) for _ in range(200)]
        ours = [json.dumps({spec.entity: p}) for p in picks]
        feast = [
            json.dumps({"feature_service": spec.feature_service_name, "entities": {spec.entity: p}}) for p in picks
        ]
        mlflow = [
            json.dumps({"dataframe_split": json.loads(rows.loc[p].to_json(orient="split", index=False))}) for p in picks
        ]
        res: dict = {}
        # closed loop, as fast as each server answers: throughput and its latencies
        res["airloop"] = wrk(url["airloop"], "/predict", ours, args.connections, args.seconds, auth)
        res["airloop_plain"] = wrk(url["airloop_plain"], "/predict", ours, args.connections, args.seconds, auth)
        res["feast"] = wrk(url["feast"], "/get-online-features", feast, args.connections, args.seconds)
        res["mlflow"] = wrk(url["mlflow"], "/invocations", mlflow, args.connections, args.seconds)
        chain = {q: res["feast"][q] + res["mlflow"][q] for q in ("p50", "p95", "p99")}
        chain["rps"] = 1 / (1 / res["feast"]["rps"] + 1 / res["mlflow"]["rps"])
        res["baseline"] = chain
        res["throughput_ratio"] = res["airloop"]["rps"] / chain["rps"]
        # paced: each of 4 connections waits before its next request; 1 entity at ~200 req/s (the delay is
        # corrected once for the latency a first run shows), 100 entities at ~70 req/s
        delay = 4 / 200 * 1000 if n == 1 else 50
        paced = wrk(url["airloop"], "/predict", ours, 4, args.seconds, auth, delay)
        if n == 1:
            cycle = 4 / paced["rps"] * 1000  # ms between a connection's requests: the delay plus the answer
            paced = wrk(url["airloop"], "/predict", ours, 4, args.seconds, auth, max(0.0, 2 * delay - cycle))
        res["airloop_paced"] = paced
        out[n] = res
    _print(out)
    return out


def _print(out: dict) -> None:
    for n in (1, 100):
        r = out[n]
        print(f"--- {n} entit{'y' if n == 1 else 'ies'} per request")
        for name in ("airloop", "airloop_paced", "airloop_plain", "feast", "mlflow", "baseline"):
            m = r[name]
            fails = f", failures {m['errors'] + m['non2xx']}, load {m['load']:.1f}" if "errors" in m else ""
            print(
                f"{name:14s} {m['rps']:8.0f} req/s  p50 {m['p50']:6.1f} ms  p95 {m['p95']:6.1f} ms  "
                f"p99 {m['p99']:6.1f} ms{fails}"
            )
        print(f"throughput airloop / two-hop baseline: {r['throughput_ratio']:.2f}x")


if __name__ == "__main__":
    main()

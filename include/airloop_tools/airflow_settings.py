"""Load ``airflow_settings.yaml`` (Astro CLI format) into plain Airflow, idempotently.

Connections, variables and pools are converted to the files Airflow's own CLI imports
(``airflow connections import --overwrite``, ``airflow variables import -a overwrite``,
``airflow pools import``), so loading twice gives the same state. ``${VAR}`` and ``${VAR:-default}``
in any value are taken from the environment, so secrets never live in the file. No Airflow import here.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_CONN_FIELDS = {"conn_host": "host", "conn_schema": "schema", "conn_login": "login", "conn_password": "password"}


def expand(value: Any, env: Mapping[str, str]) -> Any:
    """Replace ``${VAR}`` / ``${VAR:-default}`` in strings (recursively); an unset VAR without default is an error."""
    if isinstance(value, dict):
        return {k: expand(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [expand(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match) -> str:
        name, default = m.group(1), m.group(2)
        if name in env:
            return env[name]
        if default is None:
            raise ValueError(f"airflow_settings.yaml refers to ${{{name}}}, which is not set in the environment")
        return default

    return _REF.sub(sub, value)


def convert(settings: dict) -> dict[str, dict]:
    """The Astro ``airflow:`` section as Airflow's import files: {"connections", "variables", "pools"}."""
    section = (settings or {}).get("airflow") or {}
    unknown = set(section) - {"connections", "variables", "pools"}
    if unknown:
        raise ValueError(f"unknown keys under 'airflow:' in airflow_settings.yaml: {sorted(unknown)}")
    connections: dict[str, Any] = {}
    for c in section.get("connections") or []:
        conn_id = c.get("conn_id")
        if not conn_id:
            raise ValueError(f"a connection in airflow_settings.yaml has no conn_id: {c}")
        if c.get("conn_uri"):
            connections[conn_id] = c["conn_uri"]
            continue
        if not c.get("conn_type"):
            raise ValueError(f"connection {conn_id!r} needs conn_type (or conn_uri)")
        conn: dict[str, Any] = {"conn_type": c["conn_type"]}
        conn.update({key: c[field] for field, key in _CONN_FIELDS.items() if c.get(field) not in (None, "")})
        if c.get("conn_port") not in (None, ""):
            conn["port"] = int(c["conn_port"])
        extra = c.get("conn_extra")
        if extra:
            conn["extra"] = extra if isinstance(extra, str) else json.dumps(extra, sort_keys=True)
        connections[conn_id] = conn
    variables = {v["variable_name"]: _text(v.get("variable_value")) for v in section.get("variables") or []}
    pools = {
        p["pool_name"]: {
            "slots": int(p["pool_slot"]),
            "description": p.get("pool_description") or "",
            "include_deferred": bool(p.get("include_deferred", False)),
        }
        for p in section.get("pools") or []
    }
    return {"connections": connections, "variables": variables, "pools": pools}


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def read_settings(path: Path, env: Mapping[str, str] | None = None) -> dict[str, dict]:
    """Parse, expand from the environment and convert an ``airflow_settings.yaml``."""
    if not path.exists():
        raise FileNotFoundError(f"no settings file at {path}")
    return convert(expand(yaml.safe_load(path.read_text()) or {}, os.environ if env is None else env))


IMPORT_COMMANDS = {
    "connections": ["connections", "import", "--overwrite"],
    "variables": ["variables", "import", "-a", "overwrite"],
    "pools": ["pools", "import"],
}
# Airflow's own CLI commands, run one after the other in a single process (one Airflow start-up, not three).
_RUN_CLI = """
import json, sys
from airflow.__main__ import main
for argv in json.loads(sys.argv[1]):
    print("airloop: airflow " + " ".join(argv[:2]), flush=True)
    sys.argv = ["airflow", *argv]
    main()
"""


def load_settings(
    path: Path, progress: Callable[[str], None] = print, env: Mapping[str, str] | None = None
) -> dict[str, list[str]]:
    """Import the file's connections, variables and pools into the Airflow of the current environment
    (``AIRFLOW_HOME``) with Airflow's import commands; return the names loaded per kind. Secrets pass
    through a private temp file only."""
    data = read_settings(path, env)
    loaded = {kind: sorted(items) for kind, items in data.items() if items}
    with tempfile.TemporaryDirectory(prefix="airloop-settings-") as tmp:
        commands = []
        for kind in loaded:
            file = Path(tmp) / f"{kind}.json"
            file.touch(mode=0o600)
            file.write_text(json.dumps(data[kind], indent=2))
            commands.append([*IMPORT_COMMANDS[kind], str(file)])
            progress(f"loading {len(loaded[kind])} {kind} into Airflow: {', '.join(loaded[kind])}")
        if commands:
            cmd = [sys.executable, "-c", _RUN_CLI, json.dumps(commands)]
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode:
                tail = "\n".join((out.stderr or out.stdout).strip().splitlines()[-5:])
                raise RuntimeError(f"Airflow refused the settings:\n{tail}")
    return loaded

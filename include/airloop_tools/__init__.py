"""Operator tooling around the airloop package: the `airloop` command, the Airflow runner, the settings loader."""

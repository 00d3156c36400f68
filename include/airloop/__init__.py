"""airloop: the closed ML loop on Airflow."""

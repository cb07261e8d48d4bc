"""Prefect flows that chain the DVC stages (the DAG itself lives in dvc.yaml)."""

"""Tests of flows/ and tasks/: the Prefect orchestration of the DVC stages."""

"""Prefect tasks: thin wrappers that each run one DVC stage. No business logic lives here."""

"""Tests of parameter profiles: overlays, their resolution and the resolved files."""

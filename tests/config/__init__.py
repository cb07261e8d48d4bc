"""Tests of zerosearch_core/config.py and zerosearch_core/profiles.py: the typed config and the profile overlays."""

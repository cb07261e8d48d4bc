"""Tests of zerosearch_core/data/."""

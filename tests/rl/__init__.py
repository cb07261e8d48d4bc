"""Tests of zerosearch_core/rl/."""

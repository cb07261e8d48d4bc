"""Tests of zerosearch_core/simulator/."""

"""Tests of zerosearch_core/search/."""

"""Tests of zerosearch_core/stages/."""

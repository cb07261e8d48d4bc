"""The data the method reads: QA benchmarks, the retrieval corpus, the toy world, and their Great Expectations checks.

- ``benchmarks``: readers of the real benchmark files and the normalised row format.
- ``corpus``: the Wikipedia passages the index is built from.
- ``toyworld``: a seeded synthetic world for the toy profile.
- ``validation``: every Great Expectations suite and the one report writer.
"""

"""ZeroSearch as a reproducible pipeline: the library behind every DVC stage.

Run a stage with ``python -m zerosearch_core.cli <stage> --params params.yaml``; ``zerosearch --help`` lists them.
"""

__version__ = "0.1.0"

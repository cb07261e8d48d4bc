"""Long-running services (not DVC stages): ``zerosearch serve_retriever`` and ``zerosearch serve_simulator``.

Each module exposes ``run(cfg)``, which serves until interrupted.
"""

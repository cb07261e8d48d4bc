"""Real retrieval behind one interface (:class:`zerosearch_core.search.base.SearchEngine`): a local BM25/dense index
in process or over HTTP, and Serper-style web search. The simulated engine lives in :mod:`zerosearch_core.simulator`.
"""

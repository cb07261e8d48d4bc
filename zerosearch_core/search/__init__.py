"""Search engines behind one interface: a local BM25/dense retriever (in process or over HTTP).

Later stages add the LLM simulator and web search APIs as further implementations of
:class:`zerosearch_core.search.base.SearchEngine`.
"""

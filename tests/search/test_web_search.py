"""Web search through a Serper-style API, against a fake provider on 127.0.0.1 that checks the key header."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from fastapi import FastAPI, Header, HTTPException

from zerosearch_core.config import ConfigError, PipelineConfig, flatten_config
from zerosearch_core.netutil import free_port
from zerosearch_core.search.base import EpisodeContext, SearchBackendError
from zerosearch_core.search.http import running_server
from zerosearch_core.search.registry import open_search_engine

KEY = "test-key-123"
CTX = EpisodeContext("q", ("a",), 0.0, 0)


def fake_serper() -> FastAPI:
    app = FastAPI()

    @app.post("/search")
    def search(body: dict, x_api_key: str = Header(default="")) -> dict:
        if x_api_key != KEY:
            raise HTTPException(status_code=403, detail="bad key")
        results = [
            {"title": f"Result {i}", "link": f"https://example.org/{i}", "snippet": f"{body['q']} {i}"}
            for i in range(5)
        ]
        return {"organic": results}

    return app


def test_web_engine_returns_organic_results_and_never_exposes_the_key(
    cfg: PipelineConfig, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SERPER_API_KEY", KEY)
    with running_server(fake_serper(), "127.0.0.1", free_port("127.0.0.1")) as url:
        search_cfg = dataclasses.replace(cfg.search, backend="web", web_url=f"{url}/search", max_retries=0)
        with open_search_engine(search_cfg, tmp_path) as engine:
            result = engine.open_session(CTX).search("eiffel tower", 3)
            assert [d.title for d in result.documents] == ["Result 0", "Result 1", "Result 2"]
            assert result.documents[0].text == "eiffel tower 0"
            assert KEY not in str(engine.describe())
        run_cfg = dataclasses.replace(cfg, search=search_cfg)
        assert KEY not in str(flatten_config(run_cfg))

        monkeypatch.setenv("SERPER_API_KEY", "wrong")
        with open_search_engine(search_cfg, tmp_path) as engine:
            with pytest.raises(SearchBackendError, match="403"):
                engine.open_session(CTX).search("eiffel tower", 3)


def test_missing_key_is_a_clear_config_error(
    cfg: PipelineConfig, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("SERPER_API_KEY", raising=False)
    search_cfg = dataclasses.replace(cfg.search, backend="web", web_url="http://127.0.0.1:9/search")
    with pytest.raises(ConfigError, match="environment variable SERPER_API_KEY is not set"):
        with open_search_engine(search_cfg, tmp_path):
            pass
    with pytest.raises(ConfigError, match="web_url is null"):
        dataclasses.replace(cfg.search, backend="web", web_url=None)

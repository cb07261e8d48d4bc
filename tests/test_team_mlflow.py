"""A team's MLflow: `mlflow server` on 127.0.0.1 with a real PostgreSQL backend store (a cluster made here with
initdb/pg_ctl, password auth, the password only in the environment) and proxied artifact storage; a real stage logs
to it through MLFLOW_TRACKING_URI, and a client reads the run, its metrics and artifacts back over HTTP alone."""

from __future__ import annotations

import dataclasses
import glob
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from zerosearch_core.config import PipelineConfig, config_to_dict
from zerosearch_core.netutil import free_port, wait_until_healthy

pytestmark = pytest.mark.slow
PASSWORD = "canary-pg-secret-7f3a"


def _pg_bin(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))), None)
    if found is None:
        pytest.fail(f"PostgreSQL's {name} is missing: scripts/setup.sh installs Debian's postgresql package")
    return found


def _as_postgres_user(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run its programs as the `postgres` user the Debian package creates."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@pytest.fixture
def postgres() -> Iterator[tuple[int, dict[str, str]]]:
    # a folder of its own under /tmp: pytest's tmp_path sits in a root-only folder the postgres user cannot enter
    base = Path(tempfile.mkdtemp(prefix="zerosearch-pg-"))
    cluster = base / "pg"
    cluster.mkdir()
    password_file = base / "pw"
    password_file.write_text(PASSWORD + "\n")
    if os.geteuid() == 0:
        for path in (base, cluster, password_file):
            shutil.chown(path, "postgres")
    initdb = [_pg_bin("initdb"), "-D", str(cluster), "-U", "mlflow", "--auth=scram-sha-256"]
    initdb.append(f"--pwfile={password_file}")
    subprocess.run(_as_postgres_user(initdb), check=True, capture_output=True)
    port = free_port("127.0.0.1")
    options = f"-p {port} -c listen_addresses=127.0.0.1 -k {cluster}"
    start = [_pg_bin("pg_ctl"), "-D", str(cluster), "-o", options, "-l", str(cluster / "log"), "-w", "start"]
    subprocess.run(_as_postgres_user(start), check=True, capture_output=True)
    env = {"PGPASSWORD": PASSWORD, "PGHOST": "127.0.0.1", "PGPORT": str(port), "PGUSER": "mlflow"}
    try:
        subprocess.run([_pg_bin("createdb"), "mlflow"], check=True, capture_output=True, env={**os.environ, **env})
        yield port, env
    finally:
        stop = [_pg_bin("pg_ctl"), "-D", str(cluster), "-m", "fast", "-w", "stop"]
        subprocess.run(_as_postgres_user(stop), capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def mlflow_server(postgres: tuple[int, dict[str, str]], tmp_path: Path) -> Iterator[tuple[str, Path, Path]]:
    pg_port, pg_env = postgres
    port = free_port("127.0.0.1")
    artifacts = tmp_path / "artifact-store"
    log = tmp_path / "mlflow-server.log"
    env = {
        **os.environ,
        **pg_env,
        # the URI names no password: libpq reads PGPASSWORD from the environment
        "MLFLOW_BACKEND_STORE_URI": f"postgresql://mlflow@127.0.0.1:{pg_port}/mlflow",
    }
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--artifacts-destination", str(artifacts), "--workers", "1"]
    with log.open("w") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, process, 180, "mlflow server", lambda: log.read_text()[-3000:])
        yield url, artifacts, log
    finally:
        process.terminate()
        process.wait(timeout=60)


def test_a_stage_logs_to_the_team_server_on_postgresql(
    mlflow_server: tuple[str, Path, Path], cfg: PipelineConfig, tmp_path: Path
) -> None:
    from mlflow.tracking import MlflowClient

    url, artifacts, log = mlflow_server
    files = tuple(f for f in cfg.data.files if f.name in ("bamboogle_test", "multihop_train", "multihop_val"))
    small = dataclasses.replace(
        cfg,
        data=dataclasses.replace(cfg.data, files=files),
        eval=dataclasses.replace(cfg.eval, benchmarks=("bamboogle_test",)),
    )
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(config_to_dict(small), sort_keys=False))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}  # the client needs no database access
    env.update(MLFLOW_TRACKING_URI=url, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    result = subprocess.run(
        [sys.executable, "-m", "zerosearch_core.cli", "prepare_data", "--params", str(params)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]

    client = MlflowClient(tracking_uri=url)
    experiment = client.get_experiment_by_name(cfg.tracking.experiment)
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.stage = 'prepare_data'")
    assert len(runs) == 1
    run = runs[0]
    assert run.info.run_name.startswith("prepare_data · ") and run.info.status == "FINISHED"
    assert run.data.tags.get("status") == "ok" and "git_commit" in run.data.tags
    assert run.data.metrics  # the stage's metrics are in PostgreSQL
    listed = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert listed, "no artifact logged"
    # proxied storage: the client got the artifacts onto the server's destination over HTTP, with no shared path
    assert any(artifacts.rglob("*")), "the server's artifact destination is empty"
    downloaded = client.download_artifacts(run.info.run_id, sorted(listed)[0], str(tmp_path / "download"))
    assert Path(downloaded).exists()
    # the database password never reached the server's log, the run's params or tags
    assert PASSWORD not in log.read_text()
    assert PASSWORD not in str(run.data.params) + str(run.data.tags)

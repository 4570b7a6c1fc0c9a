"""Grafana's template-variable interpreter for the Prometheus datasource, as the tests need it.

The live tests run every dashboard query against a real Prometheus; to do that they must turn
``$tenant``, ``${model:regex}``, ``$__range`` ... into what Grafana 11 would send. This module
does that the way Grafana's Prometheus datasource does (same escaping, same ``label_values()``
regular expression). It is test tooling, so it lives next to the tests, not in the generator.
"""

from __future__ import annotations

import json
import re
from typing import Any, Mapping

from exporter.config import parse_duration

_LABEL_VALUES = re.compile(r"^label_values\((?:(.+),\s*)?(.+)\)\s*$")


def parse_label_values(query: str) -> tuple[str | None, str]:
    """``label_values(sel, label)`` -> ``(sel, label)``; ``label_values(label)`` -> ``(None, label)``.

    Same regular expression as Grafana's Prometheus datasource. Grafana answers it with
    ``/api/v1/label/<label>/values?match[]=<sel>`` (or ``/api/v1/series``)."""
    match = _LABEL_VALUES.match(query.strip())
    if not match:
        raise ValueError(f"not a label_values() query: {query!r}")
    return (match.group(1).strip() if match.group(1) else None), match.group(2).strip()


ALL = "$__all"
BUILTIN_DEFAULTS = {"__rate_interval": "1m", "__interval": "15s", "__range": "1h"}
_VAR_RE = re.compile(r"\$(\w+)|\$\{(\w+)(?::(\w+))?\}|\[\[(\w+)(?::(\w+))?\]\]")


def _prom_regex_escape(value: str) -> str:
    """Grafana's ``prometheusSpecialRegexEscape``: regex metacharacters get a backslash that is
    itself escaped for the PromQL string literal (``gpt-4.1`` -> ``gpt-4\\\\.1``)."""
    value = value.replace("\\", "\\\\\\\\")
    return re.sub(r"[$^*{}\[\]+?.()|]", lambda m: "\\\\" + m.group(0), value)


def _prom_plain_escape(value: str) -> str:
    """Grafana's ``prometheusRegularEscape`` (single-value variables)."""
    return value.replace("\\", "\\\\").replace("'", "\\\\'")


def _regex_escape(value: str) -> str:
    """Grafana's ``:regex`` format (``kbn.regexEscape``): one backslash."""
    return re.sub(r"[\\^$*+?.()|\[\]{}/]", lambda m: "\\" + m.group(0), value)


def substitute(expr: str, variables: Mapping[str, Any], *, dashboard: Mapping[str, Any] | None = None,
               strict: bool = True) -> str:
    """Replace template variables in ``expr`` the way Grafana's Prometheus datasource does.

    ``variables`` maps a name to a value: a string (one selected value), a list of strings
    (several), or ``"$__all"`` / ``None`` / ``["$__all"]`` for "All", which becomes the
    variable's ``allValue`` (``.*`` here). Multi-value and include-All variables are formatted as
    a regex, ``(a|b)``, each value escaped; single-value variables only get their backslashes
    escaped. Pass ``dashboard`` to read each variable's ``multi``/``includeAll``/``allValue``
    from it; otherwise every variable is taken to be multi-value with ``allValue`` ``.*``.

    Built-ins: ``$__rate_interval`` (default ``1m``), ``$__interval`` (``15s``), ``$__range``
    (``1h``), given as Prometheus durations under those names in ``variables``; ``$__range``
    renders as seconds (``3600s``) like Grafana, and ``$__range_s``, ``$__range_ms``,
    ``$__interval_ms`` are derived. Formats ``${var:regex}``, ``:pipe``, ``:csv``, ``:raw``,
    ``:text``, ``:glob``, ``:json``, ``:singlequote``, ``:doublequote`` are supported.

    An unknown variable raises ``KeyError`` when ``strict`` (Grafana would leave it as is);
    ``$1``-style references (label_replace replacements) are always left alone.
    """
    definitions: dict[str, Mapping[str, Any]] = {}
    if dashboard is not None:
        definitions = {v["name"]: v for v in dashboard.get("templating", {}).get("list", [])}
    builtins = {**BUILTIN_DEFAULTS, **{k: v for k, v in variables.items() if k in BUILTIN_DEFAULTS}}
    range_s = int(parse_duration(builtins["__range"]))
    interval_s = int(parse_duration(builtins["__interval"]))
    rendered_builtins = {
        "__rate_interval": str(builtins["__rate_interval"]),
        "__interval": str(builtins["__interval"]),
        "__interval_ms": str(interval_s * 1000),
        "__range": f"{range_s}s",
        "__range_s": str(range_s),
        "__range_ms": str(range_s * 1000),
    }

    def values_of(name: str) -> tuple[list[str] | None, Mapping[str, Any]]:
        definition = definitions.get(name, {"multi": True, "includeAll": True, "allValue": ".*"})
        raw = variables[name]
        if raw is None or raw == ALL or raw == [ALL]:
            return None, definition
        return ([raw] if isinstance(raw, str) else [str(v) for v in raw]), definition

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(4)
        fmt = match.group(3) or match.group(5)
        if name.isdigit():
            return match.group(0)
        if name in rendered_builtins:
            return rendered_builtins[name]
        if name not in variables:
            if strict:
                raise KeyError(f"no value for template variable ${name} in {expr!r}")
            return match.group(0)
        values, definition = values_of(name)
        if values is None:  # "All"
            all_value = definition.get("allValue")
            if all_value:
                return all_value
            raise KeyError(f"variable ${name} has no allValue; pass its values explicitly")
        if fmt is None:
            if not definition.get("multi") and not definition.get("includeAll"):
                return _prom_plain_escape(values[0])
            escaped = [_prom_regex_escape(v) for v in values]
            return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"
        if fmt == "regex":
            escaped = [_regex_escape(v) for v in values]
            return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"
        if fmt == "pipe":
            return "|".join(values)
        if fmt == "csv":
            return ",".join(values)
        if fmt in ("raw", "text"):
            return ",".join(values)
        if fmt == "glob":
            return values[0] if len(values) == 1 else "{" + ",".join(values) + "}"
        if fmt == "json":
            return json.dumps(values if len(values) > 1 else values[0])
        if fmt == "singlequote":
            return ",".join("'" + v.replace("'", "\\'") + "'" for v in values)
        if fmt == "doublequote":
            return ",".join('"' + v.replace('"', '\\"') + '"' for v in values)
        raise ValueError(f"unsupported variable format :{fmt} in {expr!r}")

    return _VAR_RE.sub(replace, expr)

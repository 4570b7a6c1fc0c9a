"""The dashboards against Grafana 11.6's own schema: grafana-foundation-sdk's models and Grafana's registries.

The SDK (its 11.6 build, pinned in pyproject.toml) is generated from the schemas Grafana itself
uses, so a key it does not decode is a key Grafana 11.6 does not know. Each generated dashboard
is decoded into the SDK's typed models and re-encoded:

* :func:`encode` is what ``make dashboards`` writes: the SDK's encoding, so the committed JSON is
  exactly what the models hold (a fixpoint: decoding it again changes nothing);
* :func:`problems` lists every key lost or value changed by that round trip, every value whose
  type is not the one the model declares, and every unit, transformation, matcher and override
  property Grafana 11.6 would not recognise (``grafana_11_6.yml``, read from Grafana's source).

``--check`` and ``tests/unit/test_dashboards_static.py`` require zero problems.
"""

from __future__ import annotations

import enum
import json
import re
import typing
from functools import cache
from pathlib import Path
from typing import Any, Iterator, Mapping

import yaml
from grafana_foundation_sdk.cog import runtime
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.plugins import register_default_plugins
from grafana_foundation_sdk.models import dashboard as sdk

from mixin import ROOT

REGISTRY_FILE = Path(__file__).with_name("grafana_11_6.yml")
COMPOSE_FILE = ROOT / "docker-compose.yml"

register_default_plugins()  # panel options and Prometheus queries decode into their typed models

# What Grafana 11.6 writes: the SDK's default. Older values make Grafana run its migrations.
SCHEMA_VERSION: int = sdk.Dashboard().schema_version


@cache
def registries() -> dict[str, Any]:
    return yaml.safe_load(REGISTRY_FILE.read_text(encoding="utf-8"))


@cache
def grafana_version() -> str:
    """The Grafana version docker-compose.yml runs: every panel's ``pluginVersion``.

    Grafana runs a panel plugin's migration whenever the stored pluginVersion differs from its
    own version; for the stat panel that pins min/max on percent units and flattens sparklines."""
    match = re.search(r"image:\s*grafana/grafana(?:-oss)?:(\d+\.\d+\.\d+)\b", COMPOSE_FILE.read_text(encoding="utf-8"))
    if not match:
        raise RuntimeError(f"{COMPOSE_FILE}: no grafana/grafana:<x.y.z> image")
    return match.group(1)


def encode(dash: Mapping[str, Any]) -> dict[str, Any]:
    """``dash`` decoded into the SDK's models and encoded again, as plain JSON values."""
    return json.loads(json.dumps(sdk.Dashboard.from_json(dict(dash)), cls=JSONEncoder))


def problems(dash: Mapping[str, Any]) -> list[str]:
    """Everything in ``dash`` that Grafana 11.6's schema or registries would not take as written."""
    model = sdk.Dashboard.from_json(json.loads(json.dumps(dash)))
    back = json.loads(json.dumps(model, cls=JSONEncoder))
    found = _differences(dash, back, "")
    found += _type_errors(model, "")
    found += _registry_problems(dash)
    return found


# ------------------------------------------------------------------------------ round trip

def _differences(before: Any, after: Any, path: str) -> list[str]:
    """Keys lost and values changed from ``before`` to ``after``. Keys the SDK adds are its
    defaults: :func:`encode` writes them, so the committed file holds them explicitly."""
    if isinstance(before, dict) and isinstance(after, dict):
        out = [f"{path}.{k}: not in Grafana's schema (dropped by the SDK)" for k in before if k not in after]
        for key in before.keys() & after.keys():
            out += _differences(before[key], after[key], f"{path}.{key}")
        return out
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        return [p for i, (b, a) in enumerate(zip(before, after)) for p in _differences(b, a, f"{path}[{i}]")]
    if before != after or type(before) is not type(after):
        return [f"{path}: {json.dumps(before)[:60]} became {json.dumps(after)[:60]}"]
    return []


def _type_errors(obj: Any, path: str) -> list[str]:
    """Attributes of SDK models whose value is not of the declared type (the SDK decodes scalars
    without checking them, so a string where Grafana wants a number survives). Paths use the
    SDK's Python attribute names."""
    hints = _hints(type(obj))
    out: list[str] = []
    for name, hint in hints.items():
        value = getattr(obj, name, None)
        if value is None:
            continue
        where = f"{path}.{name}"
        if not _conforms(value, hint):
            out.append(f"{where}: {type(value).__name__} {json.dumps(value, cls=JSONEncoder)[:40]} "
                       f"where the schema wants {_describe(hint)}")
        out += [p for child_path, child in _children(value, where) for p in _type_errors(child, child_path)]
    return out


@cache
def _hints(cls: type) -> dict[str, Any]:
    if not hasattr(cls, "to_json") or not hasattr(cls, "from_json"):
        return {}
    try:
        return typing.get_type_hints(cls)
    except (NameError, TypeError):
        return {}


def _children(value: Any, path: str) -> Iterator[tuple[str, Any]]:
    if isinstance(value, list):
        for i, item in enumerate(value):
            yield from _children(item, f"{path}[{i}]")
    elif _hints(type(value)):
        yield path, value


def _conforms(value: Any, hint: Any) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint in (Any, object):
        return True
    if origin is typing.Union:
        return any(_conforms(value, arm) for arm in args)
    if origin is typing.Literal:
        return value in args
    if origin is list:
        return isinstance(value, list) and all(_conforms(v, args[0]) for v in value) if args else isinstance(value, list)
    if origin is dict:
        return isinstance(value, dict)
    if hint is type(None):
        return value is None
    if isinstance(value, dict) and _hints(hint) if isinstance(hint, type) else False:
        # The SDK keeps some nested objects (panel transformations) as plain dicts: they must
        # decode into the declared model with nothing lost.
        return not _differences(value, json.loads(json.dumps(hint.from_json(value), cls=JSONEncoder)), "")
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return isinstance(value, hint) or value in {member.value for member in hint}
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True  # a typing construct this check does not know: no claim either way


def _describe(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


# ------------------------------------------------------------------------------ registries

def _panels(dash: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    for panel in dash.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def _registry_problems(dash: Mapping[str, Any]) -> list[str]:
    reg = registries()
    units, prefixes = set(reg["units"]), set(reg["unit_prefixes"])
    transformations, matchers = set(reg["transformations"]), set(reg["field_matchers"])
    version = grafana_version()
    out: list[str] = []

    def unit_ok(unit: str) -> bool:
        return unit in units or (":" in unit and unit.split(":", 1)[0] in prefixes)

    for panel in _panels(dash):
        where = f"panel {panel.get('title', '')!r}"
        if panel.get("type") == "row":
            continue
        if panel.get("pluginVersion") != version:
            out.append(f"{where}: pluginVersion {panel.get('pluginVersion')!r}, not {version!r} (Grafana would "
                       "migrate the panel on load)")
        field_config = panel.get("fieldConfig", {})
        unit = field_config.get("defaults", {}).get("unit")
        if unit is not None and not unit_ok(unit):
            out.append(f"{where}: unit {unit!r} is not a Grafana 11.6 unit")
        for transformation in panel.get("transformations", []):
            if transformation.get("id") not in transformations:
                out.append(f"{where}: transformation {transformation.get('id')!r} is not a Grafana 11.6 transformer")
        for override in field_config.get("overrides", []):
            matcher = override.get("matcher", {}).get("id")
            if matcher not in matchers:
                out.append(f"{where}: override matcher {matcher!r} is not a Grafana 11.6 field matcher")
            for prop in override.get("properties", []):
                out += [f"{where}: override {p}" for p in _property_problems(panel["type"], prop, unit_ok)]
    return out


def _property_problems(panel_type: str, prop: Mapping[str, Any], unit_ok: Any) -> list[str]:
    """An override property is a field-config key with a value: decode it where Grafana would."""
    key, value = prop.get("id", ""), prop.get("value")
    if key == "unit" and not unit_ok(value):
        return [f"unit {value!r} is not a Grafana 11.6 unit"]
    if key.startswith("custom."):
        config = runtime.panelcfg_config(panel_type)
        if config is None or config.field_config_from_json_hook is None:
            return [f"{key}: panel type {panel_type!r} has no custom field config"]
        name = key.removeprefix("custom.")
        decoded = config.field_config_from_json_hook({name: value})
    else:
        name = key
        decoded = sdk.FieldConfig.from_json({name: value})
    back = json.loads(json.dumps(decoded, cls=JSONEncoder))
    if name not in back:
        return [f"{key}: not a field-config key of {panel_type} panels in Grafana's schema"]
    return [f"{key}{p}" for p in _differences(value, back[name], "")]

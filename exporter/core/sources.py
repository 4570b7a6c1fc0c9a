"""Where a state's events came from, so simulated and real usage never end up in one set of totals.

A state file records every source that ever had an event accepted into it. Simulated sources
(the live simulator, ``backfill``) and real ones (the HTTP API, OTLP, ``import``) must not share a
state: simulated spend added to a real customer's total cannot be taken out again. Each writer
checks the state before it starts (:func:`check`) and refuses with a message naming the fix;
``--storage.allow-mixed-sources=true`` is the explicit override.

A state holding both kinds is a demo (``make run`` with a test event posted by curl): it counts as
simulated, so the simulator and backfill may keep writing to it and real writers refuse it.
"""

from __future__ import annotations

from typing import Iterable

SIMULATED = frozenset({"simulator", "backfill"})
REAL = frozenset({"api", "otlp", "import"})
FIX = "--storage.allow-mixed-sources=true"


class MixedSources(RuntimeError):
    """The state holds the other kind of events; nothing was written."""


def check(held: Iterable[str], writes_simulated: bool, path: str, who: str, allow: bool) -> None:
    """Raise :class:`MixedSources` when ``who`` (writing simulated or real events) would mix them into
    a state at ``path`` that holds ``held`` sources of the other kind."""
    held = set(held)
    simulated, real = sorted(held & SIMULATED), sorted(held & REAL)
    if allow:
        return
    if writes_simulated and real and not simulated:
        raise MixedSources(
            f"state {path} holds real events (sources: {', '.join(real)}); {who} writes simulated events and would "
            f"add simulated spend to real customers' totals. Use a fresh --storage.path for simulated data "
            f"(make run and tools/stack.sh keep theirs apart), or pass {FIX} to mix them anyway.")
    if not writes_simulated and simulated:
        raise MixedSources(
            f"state {path} holds simulated history (sources: {', '.join(simulated)}); {who} writes real events and "
            f"would add them to simulated totals. Use a fresh --storage.path for real data, or pass {FIX} "
            f"to mix them anyway.")

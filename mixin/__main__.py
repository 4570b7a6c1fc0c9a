"""``python -m mixin dashboards|rules [--check] [...]``: one entry point for both generators."""

from __future__ import annotations

import sys

from mixin import dashboards, rules

COMMANDS = {"dashboards": dashboards.main, "rules": rules.main}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] not in COMMANDS:
        print(f"usage: python -m mixin {{{'|'.join(COMMANDS)}}} [--check] [--help]", file=sys.stderr)
        return 2
    return COMMANDS[args[0]](args[1:])


if __name__ == "__main__":
    sys.exit(main())

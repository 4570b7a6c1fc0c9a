"""``python -m exporter`` runs the CLI (the server by default)."""

from .cli import main

raise SystemExit(main())

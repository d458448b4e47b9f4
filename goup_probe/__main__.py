"""``python -m goup_probe`` runs the CLI."""

from goup_probe.cli import main

raise SystemExit(main())

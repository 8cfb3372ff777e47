"""Run the command line with `python -m daemon`."""

from daemon.cli import main

raise SystemExit(main())

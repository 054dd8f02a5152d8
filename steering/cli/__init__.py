"""Command-line entry points: ``steering`` (daemons) and ``steerctl`` (operators)."""

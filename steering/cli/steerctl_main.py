"""``python -m steering.cli.steerctl_main``: steerctl without the console script."""

from steering.cli.steerctl import main

main()

"""One thin module per ``fmdepth`` subcommand.

Each has ``HELP`` (one line), ``configure_parser(parser)`` and ``run(args) -> int``.

Commands that need the node (``evaluate --bag``, the node row of ``bench``, ``replay``,
``record``, ``soak``, ``demo``) live in :mod:`fmdepth_ros.ros.tools`. Every command is listed in
the ``fmdepth_ros.commands`` entry-point group of ``setup.py``; ``cli.py`` reads that group.
"""

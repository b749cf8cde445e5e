"""ROS tools: programs that run the node or talk to a ROS graph (``fmdepth`` subcommands).

``replay``, ``record``, ``soak``, ``bench_node`` (+ the ``bench`` command), ``demo``, and
``evaluate`` (the core ``fmdepth evaluate`` extended with ``--bag``).
"""

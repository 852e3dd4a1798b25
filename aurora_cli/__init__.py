"""The `aurora-pipeline` command line over the library (``aurora_pipeline``) and the Prefect
flows (``flows``): the command (``main``), its local Prefect server (``local_server``) and
the warm command runner beside it (``command_runner``).

Nothing in ``aurora_pipeline`` or ``flows`` imports this package.
"""

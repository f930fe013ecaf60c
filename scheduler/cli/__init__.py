"""The ``amends`` command line: :mod:`.main` parses it and runs the chosen command's module.

One module per command: ``emit``, ``config_cmd`` (config check), ``log`` (its tables in
``logview``), ``opt_outs``, ``worker`` (worker and scheduler), ``serve``, ``preview_cmd``
(its simulation in ``preview``), ``mailsink`` and ``demo``. ``_common`` holds what they
share; ``event_input`` reads events for ``emit`` and ``preview``.
"""

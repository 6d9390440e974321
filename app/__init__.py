"""The application wing: the command line, the session supervisor and its summary, the demo
policy, ``doctor``, ``bench``, ``verify`` and the live monitor. It sits above every other layer
and nothing below imports it (``lint-imports`` checks the contracts in ``pyproject.toml``)."""

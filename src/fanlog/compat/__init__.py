"""Drop-in names for code written against other logging wrappers (see :mod:`fanlog.compat.itwinai`)."""

TARGET_ALIASES: dict[str, str] = {"itwinai.loggers.": "fanlog.compat.itwinai."}
"""Dotted-path prefixes rewritten in a config file's ``_target_``: itwinai configs run
unchanged on fanlog."""

"""Drop-in names for code written against other logging wrappers (see :mod:`fanlog.compat.itwinai`)."""

"""`python -m fanlog.cli`: the `fanlog` command."""

from fanlog.cli import main

main()

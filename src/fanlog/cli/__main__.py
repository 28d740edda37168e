"""`python -m fanlog.cli`: the `fanlog` command where the console script is not on PATH."""

from fanlog.cli import main

main()

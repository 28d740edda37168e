"""`python -m fanlog.cli`: the `fanlog` command."""

from fanlog.cli import main

if __name__ == "__main__":
    main()

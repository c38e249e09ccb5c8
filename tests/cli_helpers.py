"""Helpers for the command-line tests: run the front door in-process, and what a user error looks like."""
from __future__ import annotations

from rmsnorm_lab import cli


def run_cli(argv, capsys):
    """(exit status, stdout, stderr) of ``python -m rmsnorm_lab ARGV``, run in this process."""
    try:
        code = cli.main(argv)
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def assert_one_line_exit_2(code, err):
    """A user error: exit status 2 and one line on stderr, no traceback."""
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err

"""The ``graceshut`` command: ``prestop``, ``run`` and ``simulate``, and ``--version``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import graceshut

from ._prestop import add_prestop_command
from ._run import add_run_command
from ._simulate import add_simulate_command

__all__ = ["build_parser", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    status: int = args.run(args)
    return status


def build_parser() -> argparse.ArgumentParser:
    """The ``graceshut`` parser with its sub-commands (parsing runs nothing)."""
    parser = argparse.ArgumentParser(
        prog="graceshut", description="Graceful shutdown tools for apps on Kubernetes."
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"%(prog)s {graceshut.__version__}",
        help="print the version",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_prestop_command(commands)
    add_run_command(commands)
    add_simulate_command(commands)
    return parser


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

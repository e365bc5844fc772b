"""The ``graceshut`` command: ``prestop`` for exec preStop hooks, ``run`` as the entrypoint."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ._prestop import add_prestop_command
from ._run import add_run_command
from ._simulate import add_simulate_command

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="graceshut", description="Graceful shutdown tools for ASGI apps on Kubernetes."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_prestop_command(commands)
    add_run_command(commands)
    add_simulate_command(commands)
    args = parser.parse_args(argv)
    status: int = args.run(args)
    return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""The ``waap-submit`` command: submitting a profile to the ECR's Jenkins. Its client arrives with the Jenkins work;
until then it says so plainly instead of pretending."""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence, TextIO

from . import __version__

__all__ = ["main"]


def main(argv: Optional[Sequence[str]] = None, *, err: TextIO = sys.stderr) -> int:
    parser = argparse.ArgumentParser(prog="waap-submit", description="Submit a profile to the ECR's Jenkins.")
    parser.add_argument("--version", action="version", version=f"waap-submit {__version__}")
    parser.parse_args(argv)
    err.write("waap-submit: submitting to Jenkins is not available in this version; "
              "profile locally with `waap run`\n")
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

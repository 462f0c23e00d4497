"""`ti-toolkit fetch | upload`: the steps a training pod runs around the user's script."""

from __future__ import annotations

import argparse
import sys

from ti.toolkit import fetch, upload


def main(argv: list[str] | None = None) -> int:
    """Entry point of `ti-toolkit` and `python -m ti.toolkit`; returns the process exit code."""
    parser = argparse.ArgumentParser(
        prog="ti-toolkit",
        description="The TI container contract's data steps. Settings come from the environment "
        "(TI_*, TM_*, TENCENTCLOUD_*); paths live under $TI_ML_ROOT (default /opt/ml).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("fetch", help="download source, channels and checkpoints; write config and launcher")
    up = commands.add_parser("upload", help="wait for the training script, then upload model, output, log")
    up.add_argument("--poll-seconds", type=float, default=0.5, help="how often to look for the exit code")
    args = parser.parse_args(argv)
    if args.command == "fetch":
        return fetch.main()
    return upload.main(poll_seconds=args.poll_seconds)


if __name__ == "__main__":
    sys.exit(main())

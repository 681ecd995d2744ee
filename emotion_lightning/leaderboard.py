"""The leaderboard in docs/: add a sweep's figures to docs/results/leaderboard.csv, and render the tables and the
chart from that file (run from the repository root).

    python -m emotion_lightning.leaderboard                      # render leaderboard.md, README.md's headline, the chart
    python -m emotion_lightning.leaderboard --check              # exit 1 if a rendered file differs from the CSV
    python -m emotion_lightning.leaderboard --add outputs/multiruns/best_scratch --name experiment=best_scratch \\
        --command "emotion-lightning train -m experiment=best_scratch ... hydra.sweep.dir=outputs/multiruns/best_scratch"
"""

import argparse
import logging
import sys

from emotion_lightning.evaluation.leaderboard import add_row, render, row_from_sweep, stale_files
from emotion_lightning.training.commands import command

CSV = "docs/results/leaderboard.csv"
PAGE = "docs/results/leaderboard.md"
README = "README.md"
CHART = "docs/results/leaderboard.png"


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only say whether the rendered files match the CSV")
    parser.add_argument("--add", metavar="SWEEP", help="a sweep folder whose runs (one configuration) become a row")
    parser.add_argument("--name", help="with --add: the recipe as a user types it, e.g. experiment=best_scratch")
    parser.add_argument("--command", help="with --add: the command that made the sweep (names hydra.sweep.dir)")
    parser.add_argument("--model", default="", help="with --add: the model in words (default: its config name)")
    parser.add_argument("--notes", default="", help="with --add: a note printed under the row's command")
    parser.add_argument("--csv", default=CSV)
    return parser


def main(argv=None) -> None:
    arguments = parser()
    args = arguments.parse_args(argv)
    if args.add and not (args.name and args.command):
        arguments.error("--add needs --name and --command")
    with command():
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        if args.check:
            stale = stale_files(args.csv, PAGE, README, CHART)
            for path in stale:
                print(f"{path} differs from {args.csv}; run `python -m emotion_lightning.leaderboard`")
            sys.exit(1 if stale else 0)
        if args.add:
            row = row_from_sweep(args.add, args.name, args.command, model=args.model, notes=args.notes)
            print(f"{add_row(args.csv, row)} {args.name} {row['settings']}".rstrip())
        for path in render(args.csv, PAGE, README, CHART):
            print(f"rendered {path}")


if __name__ == "__main__":
    main()

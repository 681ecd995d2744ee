"""Report over a run or multirun folder: the results tables as Markdown and CSV, and one HTML page.

    python -m emotion_lightning.report outputs/multiruns/NAME [MORE_FOLDERS...]   [--out DIR]

See emotion_lightning/evaluation/report.py for what it writes.
"""

import argparse
import logging
from pathlib import Path

from emotion_lightning.evaluation.report import build_report
from emotion_lightning.training.commands import command


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", help="run or multirun folders (searched recursively)")
    parser.add_argument("--out", help="where to write the report (default: FIRST_FOLDER/report)")
    return parser


def main(argv=None) -> None:
    arguments = parser()
    args = arguments.parse_args(argv)
    with command():
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        out = Path(args.out or Path(args.folders[0]) / "report")
        build_report(args.folders, out)
        print((out / "report.md").read_text())


if __name__ == "__main__":
    main()

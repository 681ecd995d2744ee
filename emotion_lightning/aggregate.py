"""Aggregate metrics.json files over seeds and folds: mean, sd and a 95% bootstrap CI per configuration.

    python -m emotion_lightning.aggregate outputs/multiruns/2026-...   [--out DIR]

Writes aggregate.json and aggregate.md into the folder, or into --out; also cross_corpus.md when runs
train and test on different corpora, robustness.md when runs test under several conditions, and
ua_vs_snr.png when they sweep the SNR of a noise condition.
"""

import argparse
import logging
from pathlib import Path

from emotion_lightning.evaluation.aggregate import write_aggregate
from emotion_lightning.training.commands import command


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", help="a run or multirun folder (searched recursively for metrics.json)")
    parser.add_argument("--out", help="where to write the tables (default: the folder)")
    return parser


def main(argv=None) -> None:
    arguments = parser()
    args = arguments.parse_args(argv)
    with command():
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        out = Path(args.out or args.folder)
        print(write_aggregate(args.folder, out))


if __name__ == "__main__":
    main()

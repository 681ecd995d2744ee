"""Download corpora: `emotion-lightning download ravdess|crema_d|tess|all [data_dir=...]`
(or `python -m emotion_lightning.download corpus=NAME ...`).

Prints each corpus's license and citation, then downloads, verifies and unpacks it into DATA_DIR in the layout
the loader reads (see emotion_lightning/data/download.py). A failed download prints one message saying what
to do and exits with status 1 (HYDRA_FULL_ERROR=1 shows the traceback).
"""

import logging
import os
import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from emotion_lightning.data.download import download
from emotion_lightning.training.commands import check_command_line, command
from emotion_lightning.training.resolvers import config_dir

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict[str, int]:
    """Install the configured corpus (or all) and return {corpus: clips}."""
    sources = OmegaConf.to_container(cfg.sources, resolve=True)
    counts = download(cfg.corpus, cfg.data_dir, sources, workers=cfg.workers, retries=cfg.retries,
                      backoff=cfg.backoff, timeout=cfg.timeout, progress=cfg.progress)
    for name, clips in counts.items():
        log.info("%s: %d clips ready in %s", name, clips, os.path.join(cfg.data_dir, name))
    return counts


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="download")
def hydra_main(cfg: DictConfig) -> None:
    with command():
        run(cfg)


def corpus_shorthand(argv: list[str]) -> list[str]:
    """`download ravdess ...` is short for `download corpus=ravdess ...` (the first argument, if it is a bare name)."""
    if argv and "=" not in argv[0] and not argv[0].startswith("-"):
        return [f"corpus={argv[0]}", *argv[1:]]
    return argv


def main() -> None:
    sys.argv[1:] = corpus_shorthand(sys.argv[1:])
    check_command_line()
    hydra_main()


if __name__ == "__main__":
    main()

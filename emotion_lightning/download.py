"""Download corpora: `python -m emotion_lightning.download corpus=ravdess|crema_d|tess|all [data_dir=...]`.

Prints each corpus's license and citation, then downloads, verifies and unpacks it into DATA_DIR in the layout
the loader reads (see emotion_lightning/data/download.py). A failed download prints one message saying what
to do and exits with status 1 (HYDRA_FULL_ERROR=1 shows the traceback).
"""

import logging
import os
import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from emotion_lightning.data.download import DownloadError, download

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict[str, int]:
    """Install the configured corpus (or all) and return {corpus: clips}."""
    sources = OmegaConf.to_container(cfg.sources, resolve=True)
    counts = download(cfg.corpus, cfg.data_dir, sources, workers=cfg.workers, retries=cfg.retries,
                      backoff=cfg.backoff, timeout=cfg.timeout, progress=cfg.progress)
    for name, clips in counts.items():
        log.info("%s: %d clips ready in %s", name, clips, os.path.join(cfg.data_dir, name))
    return counts


@hydra.main(version_base="1.3", config_path="../conf", config_name="download")
def main(cfg: DictConfig) -> None:
    try:
        run(cfg)
    except DownloadError as error:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"error: {error}", file=sys.stderr, flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()

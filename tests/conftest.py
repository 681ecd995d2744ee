import os
import sys
from pathlib import Path

import pytest

from tests.helpers.audio import make_crema_d, make_ravdess, make_tess
from tests.helpers.configs import CONF_DIR
from tests.helpers.training import REPO

# Fixtures that train through the command in a subprocess (or read the real corpus): every test using one is slow.
SLOW_FIXTURES = {"trained_checkpoint", "onnx_export", "shared_ravdess"}


def pytest_collection_modifyitems(items):
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


SHARED_DATA = Path(os.environ.get("EMOTION_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """A data dir holding fixture RAVDESS, CREMA-D and TESS corpora in their real layouts."""
    root = tmp_path_factory.mktemp("data")
    make_ravdess(root / "ravdess")
    make_crema_d(root / "crema_d")
    make_tess(root / "tess")
    return root


@pytest.fixture(scope="session")
def shared_ravdess() -> Path:
    path = SHARED_DATA / "ravdess"
    if not path.is_dir():
        pytest.skip(f"real RAVDESS not found at {path} (set EMOTION_SHARED_DATA to the folder holding ravdess/)")
    return path


@pytest.fixture
def compose_train(tmp_path):
    """Compose conf/train.yaml with overrides, as `python -m emotion_lightning.train` would."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    import emotion_lightning  # noqa: F401  (registers resolvers)

    def _compose(overrides=()):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose("train", overrides=[f"paths.root_dir={tmp_path}", f"paths.output_dir={tmp_path}/run",
                                              *overrides], return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        return cfg

    yield _compose
    GlobalHydra.instance().clear()


@pytest.fixture(scope="session")
def trained_checkpoint(data_dir, tmp_path_factory) -> Path:
    """A real checkpoint: one epoch of the default ResNet on the fixture RAVDESS, through the train command."""
    import subprocess

    run_dir = tmp_path_factory.mktemp("inference_run")
    result = subprocess.run([sys.executable, "-m", "emotion_lightning.train", f"paths.data_dir={data_dir}",
                             f"paths.cache_dir={run_dir}/cache", f"hydra.run.dir={run_dir}", "trainer.max_epochs=1",
                             "data.batch_size=16", "logger=none", "seed=1"],
                            cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="session")
def onnx_export(trained_checkpoint) -> Path:
    """The checkpoint exported to ONNX at its default place (beside it), as backend=onnx would find it, by the
    export command's own function (parity-checked before it lands)."""
    from emotion_lightning.inference.export import export

    return export(trained_checkpoint, "onnx")

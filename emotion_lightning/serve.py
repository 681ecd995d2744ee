"""HTTP service: `python -m emotion_lightning.serve ckpt=PATH [port=8000] [backend=onnx]` (see inference/app.py)."""

import hydra
from omegaconf import DictConfig

from emotion_lightning.inference.app import create_app
from emotion_lightning.inference.predictor import predictor_from_config
from emotion_lightning.inference.stream import StreamSettings
from emotion_lightning.training.commands import command


@hydra.main(version_base="1.3", config_path="../conf", config_name="serve")
def main(cfg: DictConfig) -> None:
    import uvicorn

    with command():
        app = create_app(predictor_from_config(cfg), cfg.max_upload_mb, cfg.max_seconds,
                         StreamSettings.from_config(cfg.stream))
        uvicorn.run(app, host=cfg.host, port=cfg.port)


if __name__ == "__main__":
    main()

"""HTTP service: `python -m emotion_lightning.serve ckpt=PATH [port=8000] [backend=onnx]` (see inference/app.py)."""

import hydra
from omegaconf import DictConfig

from emotion_lightning.inference.app import create_app
from emotion_lightning.inference.predictor import predictor_from_config
from emotion_lightning.training.commands import check_command_line, command
from emotion_lightning.training.resolvers import config_dir
from emotion_lightning.inference.stream import StreamSettings


# Room above stream.max_frame_bytes in a WebSocket message: a frame a little over it still gets the stream's own
# error saying why; a larger one is refused by the server (close code 1009) before it is read into memory.
FRAME_SLACK_BYTES = 1024


def server_options(cfg: DictConfig) -> dict:
    """uvicorn's settings from the serve config: where to listen, how many connections at once (more get 503),
    how long an idle keep-alive connection stays open, the largest WebSocket message it reads."""
    return {"host": cfg.host, "port": cfg.port, "limit_concurrency": cfg.limit_concurrency,
            "timeout_keep_alive": cfg.timeout_keep_alive,
            "ws_max_size": cfg.stream.max_frame_bytes + FRAME_SLACK_BYTES}


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="serve")
def main(cfg: DictConfig) -> None:
    import uvicorn

    with command():
        app = create_app(predictor_from_config(cfg), cfg.max_upload_mb, cfg.max_seconds,
                         StreamSettings.from_config(cfg.stream), allowed_hosts=list(cfg.allowed_hosts), docs=cfg.docs,
                         upload_timeout=cfg.upload_timeout)
        uvicorn.run(app, **server_options(cfg))


if __name__ == "__main__":
    check_command_line()
    main()

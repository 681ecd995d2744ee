"""Export a trained checkpoint as one graph, waveform -> class probabilities (front-end included):
`python -m emotion_lightning.export ckpt=PATH [format=onnx|torchscript] [output=PATH]`."""

import hydra
from omegaconf import DictConfig

from emotion_lightning.inference.export import export
from emotion_lightning.training.commands import check_command_line, command
from emotion_lightning.training.resolvers import config_dir


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="export")
def main(cfg: DictConfig) -> None:
    with command():
        print(export(cfg.ckpt, cfg.format, cfg.output, cfg.opset))


if __name__ == "__main__":
    check_command_line()
    main()

"""The `emotion-lightning` command: `emotion-lightning COMMAND [ARGS...]` runs `python -m emotion_lightning.COMMAND
ARGS...` (the same Hydra overrides, or the same options for report and aggregate)."""

import runpy
import sys

# name -> what it does, for `emotion-lightning --help`; each is the module emotion_lightning.<name>.
COMMANDS = {
    "train": "train a model and test its best checkpoint (Hydra overrides: data=... model=... split=...)",
    "eval": "evaluate a checkpoint on a data set and split (ckpt=...)",
    "predict": "predict the emotions of audio files (ckpt=... audio=FILE_OR_FOLDER)",
    "export": "export a checkpoint as ONNX or TorchScript (ckpt=... [format=torchscript])",
    "serve": "serve a model over HTTP (ckpt=... [port=8000])",
    "stream": "live emotion of a file or microphone, to a running service or here (FILE|--mic [--ckpt ...])",
    "report": "tables and an HTML page over run or multirun folders (FOLDER... [--out DIR])",
    "aggregate": "mean, sd and 95% CI over seeds and folds (FOLDER [--out DIR])",
    "calibrate": "one temperature for a sweep, fitted on all its runs' validation clips (SWEEP)",
    "leaderboard": "add a sweep to docs/results/leaderboard.csv, render the docs' tables and chart ([--add SWEEP ...])",
    "download": "download a corpus into the data dir (ravdess|crema_d|tess|all)",
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {about}" for name, about in COMMANDS.items()]
    return ("usage: emotion-lightning COMMAND [ARGS...]\n\n"
            "Speech emotion recognition with PyTorch Lightning and Hydra. Commands:\n" + "\n".join(lines) + "\n\n"
            "`emotion-lightning COMMAND --help` shows a command's settings; `python -m emotion_lightning.COMMAND` is "
            "the same command.\nExamples:\n"
            "  emotion-lightning download ravdess\n"
            "  emotion-lightning train model=resnet split=speaker_independent seed=1\n"
            "  emotion-lightning predict ckpt=outputs/runs/<run>/checkpoints/best.ckpt audio=clip.wav\n")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage(), end="")
        return
    name, *rest = argv
    if name not in COMMANDS:
        print(f"emotion-lightning: unknown command {name!r}; use one of {', '.join(COMMANDS)}\n\n{usage()}",
              end="", file=sys.stderr)
        sys.exit(2)
    # Run the module as `python -m` would, so Hydra finds conf/ beside the package and names the job after it.
    sys.argv = [f"emotion-lightning {name}", *rest]
    runpy.run_module(f"emotion_lightning.{name}", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()

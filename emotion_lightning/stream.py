"""Live emotion of a file or a microphone, printed as JSON lines (one per window, then a summary):

    emotion-lightning stream clip.wav                        # to a running service (emotion-lightning serve)
    emotion-lightning stream clip.wav --speed 4 --url ws://HOST:8000/stream
    emotion-lightning stream clip.wav --ckpt model.ckpt      # score here, no service
    emotion-lightning stream --mic                           # needs sounddevice and a capture device; Ctrl-C ends

A file is sent at real-time pace (--speed N for N times faster, 0 for no waiting) in 32 ms frames, as a
microphone would send it. Exit status 1 when the stream ended with an error (its message is the last line).
"""

import argparse
import json
import sys

from emotion_lightning.data.audio import AudioError
from emotion_lightning.data.errors import UsageError
from emotion_lightning.inference.stream_client import (RATE, file_frames, microphone_frames, paced,
                                                       stream_in_process, stream_to_service)
from emotion_lightning.training.commands import command


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="emotion-lightning stream", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file", nargs="?", help="an audio file (WAV, FLAC, OGG/Opus, MP3, ...)")
    parser.add_argument("--mic", action="store_true", help="stream the default microphone instead of a file")
    parser.add_argument("--url", default="ws://127.0.0.1:8000/stream", help="the service's /stream WebSocket")
    parser.add_argument("--ckpt", help="score with this checkpoint (.ckpt or .onnx) here instead of a service")
    parser.add_argument("--vad", default="silero", help="with --ckpt: silero (default) or none")
    parser.add_argument("--speed", type=float, default=1.0, help="times real time for a file (0: no waiting)")
    parser.add_argument("--hop", type=float, help="seconds between windows (default: the service's, 0.5)")
    return parser


def main(argv=None) -> None:
    arguments = parser()
    args = arguments.parse_args(argv)
    if bool(args.file) == args.mic:
        arguments.error("give an audio FILE or --mic")
    if args.speed < 0:
        arguments.error("--speed must be 0 (no waiting) or more")
    errors = []

    def show(event: dict) -> None:
        print(json.dumps(event), flush=True)
        if event["type"] == "error":
            errors.append(event)

    with command():
        try:
            frames = microphone_frames() if args.mic else paced(file_frames(args.file), RATE, args.speed)
        except AudioError as error:
            raise UsageError(f"{args.file}: {error}") from None
        if args.ckpt:
            from emotion_lightning.inference.predictor import EmotionPredictor

            predictor = EmotionPredictor.from_checkpoint(args.ckpt, vad=args.vad)
            stream_in_process(predictor, frames, RATE, show, args.hop)
        else:
            stream_to_service(args.url, frames, RATE, show, args.hop)
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()

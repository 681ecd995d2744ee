"""Predictor, recording windows, export to ONNX/TorchScript, and the HTTP app."""

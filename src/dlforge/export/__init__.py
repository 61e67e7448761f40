"""Export: a trained run → a verified, self-describing model package (ONNX + manifest + hashes)."""

"""Serving: the Open Inference Protocol (KServe V2) over HTTP, with dynamic batching."""

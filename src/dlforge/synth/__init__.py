"""Offline synthesis of demo data (speech with eSpeak NG), torch-free: each voice runs in its own process."""

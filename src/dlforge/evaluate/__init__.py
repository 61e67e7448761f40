"""Evaluation: metrics (torchmetrics, synced across workers), reports and plots."""

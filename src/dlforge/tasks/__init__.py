"""The built-in tasks, one package each: classification, seq2seq, gan, denoise.

Each package owns its whole vertical — `task.py` (training side: data, model, step, metrics, hooks),
`serving.py` (torch-free: codec, engines, offline predict), and its model, data, export and report
modules. The contract they keep and the registry that finds them (built-in and third-party) is
dlforge.taskapi; stages import that, never a task. docs/architecture.md says how to add one.
"""

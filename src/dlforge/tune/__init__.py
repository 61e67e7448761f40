"""`dlforge tune`: hyperparameter search over an experiment's own keys, on Optuna."""

"""Training utilities shared by train.py and the tasks: the config check, callbacks, the non-finite check."""

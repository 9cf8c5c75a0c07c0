"""Distributed training on Ray Train: `python -m gansvc.train` (the CLI in __main__, the worker loop in loop)."""

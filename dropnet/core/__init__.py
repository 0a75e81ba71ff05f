"""The neutral core every stage builds on: errors, atomic file I/O, row seeds and the model-package contract.

It imports only the standard library and numpy, so the trainer, the exporter and a torch-free
server can all depend on it without depending on each other.
"""

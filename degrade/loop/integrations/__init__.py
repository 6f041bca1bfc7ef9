"""Callbacks for training frameworks; each module imports its framework when imported.

- :mod:`degrade.loop.integrations.lightning`: ``DegradeCallback`` for PyTorch Lightning.
- :mod:`degrade.loop.integrations.hf`: ``DegradeCallback`` for Hugging Face ``Trainer``.
"""

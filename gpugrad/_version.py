"""gpugrad's version, in a module of its own so that checkpoints can record it without
importing the package face (``gpugrad/__init__.py`` re-exports it as ``gg.__version__``)."""

__version__ = "0.1.0"

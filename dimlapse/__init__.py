"""dimlapse: record how a network's representations evolve during training, then analyse it."""

__version__ = "0.1.0"

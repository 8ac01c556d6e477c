"""Builders of :class:`hybridsweep.model.TextEncoder` objects, one module per family of initializer."""

"""latentdiff: explain why one LLM behaves differently from another, by crosscoder model diffing."""

__version__ = "0.1.0"

"""harness: quantize, serve and benchmark LLMs from one YAML config."""

__version__ = "0.1.0"

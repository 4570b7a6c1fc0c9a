"""llm-usage-exporter: Prometheus metrics for the usage and cost of LLM applications and AI agents."""

__version__ = "0.1.0"

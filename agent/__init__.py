"""hive-agent: a Fluentd-compatible log agent for purchase logs."""

__version__ = "0.1.0"

"""``hive-agent convert``: a td-agent (Fluentd) or Fluent Bit config, as this agent's TOML.

Readers (fluentd.py, fluentbit.py) turn a file into sections with their
line numbers; translate.py maps what this agent supports to its config and
lists everything else with its line and why. Nothing here starts anything.
"""

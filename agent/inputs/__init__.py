"""Inputs: each module holds its config model, its code and its build function (agent/registry.py)."""

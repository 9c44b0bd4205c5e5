"""The one compiled part, agent/_pools.c (see agent/memory.py): optional, so that where no C
compiler is, the agent installs and runs all the same and only keeps a burst's empty pools."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("agent._pools", ["agent/_pools.c"], optional=True)])

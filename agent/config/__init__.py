"""The configuration: the value types every component shares (types.py) and the document
that holds the components (document.py). Kept apart so that a component module can import
the types while the document imports every component through agent/registry.py."""

"""The ledger: every purchase accounted for by day, game and output (agent/ledger/store.py)."""

"""A chaos run beside the benchmark: ``python -m bench.chaos`` (docs/reliability.md, "Chaos run").

``services`` the processes it starts, ``rig`` them wired together, ``config`` the
providers.yaml, ``faults`` what it injects and when, ``load`` the clients, ``records``
app.log and the ledger read back, ``report`` the table and the goals.
"""

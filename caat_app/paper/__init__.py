"""The paper's experiments, each one command: `caat paper fig6a`.

Torch-free. `catalogue` holds every experiment as data (what it trains, what it
measures, how it is reported), `table1` the paper's own Table 1 numbers, `scale` turns
an experiment into validated run configs and evaluation requests (the paper's scale or
the CPU smoke scale), `estimate` what that costs on a GPU, `run` queues, trains and
evaluates it through the sweep and evaluation machinery, and `report` and `plots` turn
the stored results into the paper's figures, tables and a computed verdict.
"""

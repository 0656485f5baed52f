"""The conflict lab: the paper's Section 3 (`synth`: the synthetic task, Theorem 1's bound)
and where the conflict lives on real runs (per sample: `persample`; per layer: recorded by
the trainer with `--layer-stats`)."""

"""The Textual dashboard (`caat` with no arguments). It never imports torch.

A placeholder until the dashboard lands: the engine, the store and the CLI come first.
"""

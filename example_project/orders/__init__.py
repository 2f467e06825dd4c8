"""Orders: a small app that reads and writes, used by the example project and its demo."""

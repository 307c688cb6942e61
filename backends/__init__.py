"""Backend adapters: one module per serving engine behind one protocol (base)."""

"""The stages of a cell, in the order harness.cell runs them:
calibrate → quantize → serve + measure (bench) → serve under load (serving) → evaluate."""

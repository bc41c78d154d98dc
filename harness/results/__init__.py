"""The results table: its columns (schema), metrics, store, reading, and the compare pass."""

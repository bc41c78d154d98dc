"""The serve-under-load stage: the cell's server on 127.0.0.1 and a streaming client load."""

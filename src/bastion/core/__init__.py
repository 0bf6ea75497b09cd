"""Pure logic: no web framework, no database, no I/O beyond reading shipped data."""

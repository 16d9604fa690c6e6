"""Lake I/O, the data schema and validation of raw files."""

"""The tutorial's chapters as Prefect flows, one module per chapter."""

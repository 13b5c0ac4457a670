"""The tutorial's actions as idempotent "ensure" functions, one module per chapter."""

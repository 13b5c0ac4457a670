"""How the drill judges what it sees: one module per chapter, each check a verdict with the
evidence it saw (result.py); the writes and reads they need are steps (pe_dr.steps)."""

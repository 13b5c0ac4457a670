"""How the drill judges what it sees: the checks, and the parsers of real outputs they read."""

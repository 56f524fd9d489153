"""State that outlives a process: the relational database (SQLite or PostgreSQL) and Redis."""

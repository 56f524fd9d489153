"""The tamper-evident audit trail: one record per decision, hash-chained per writer, with
signed checkpoints, in the shared database."""

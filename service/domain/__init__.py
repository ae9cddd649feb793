"""Pure rules: tag classes, policy evaluation, promotion gates (no Flask, no Redis)."""

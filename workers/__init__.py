"""RQ jobs: scanner, webhook events, notifications, reconciliation (never imports Flask)."""

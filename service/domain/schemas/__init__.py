"""Document schemas below HTTP: the policy document and backup lines (marshmallow, no Flask)."""

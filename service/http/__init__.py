"""The HTTP side: the app factory, the /api/v1 blueprints and the /v2 registry proxy."""

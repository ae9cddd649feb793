"""The /api/v1 blueprints (flask-smorest: marshmallow schemas become the OpenAPI spec)."""

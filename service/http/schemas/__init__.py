"""marshmallow schemas of the API's JSON shapes (input schemas reject unknown fields)."""

"""The use cases: what the API and the workers do, in terms of domain, store and registry."""

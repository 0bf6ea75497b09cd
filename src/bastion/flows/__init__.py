"""Use cases. Flows raise domain errors (flows.errors) and take a RequestContext."""

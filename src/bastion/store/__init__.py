"""Storage: SQLAlchemy Core tables, the engine, and one repository module per concern."""

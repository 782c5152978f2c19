"""Database queries over AsyncSession and Core connections."""

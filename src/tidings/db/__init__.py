"""Persistence: SQLAlchemy 2 async models, the database handle, Alembic migrations."""

from tidings.db.database import Database
from tidings.db.models import Base, User

__all__ = ["Base", "Database", "User"]

"""What the ORM knows about a statement: the relationship behind a lazy load, the entity.

The per-statement path only notes that a statement was a lazy load (its
``_sa_orm_load_options`` carry ``_lazy_loaded_from``, as ``ORMExecuteState.lazy_loaded_from``
reads them) and keeps a reference to the compiled statement. The names are resolved here,
once per finding, when the scope closes. SQLAlchemy caches the compiled form per statement
shape, and the loader path (``ORMExecuteState.loader_strategy_path``) is part of its cache
key, so the compiled statement names the relationship reliably.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import RelationshipDirection


def _compile_options(compiled: Any) -> Any:
    statement = getattr(compiled, "statement", None)
    return getattr(statement, "_compile_options", None)


def relationship_property(compiled: Any) -> Any:
    """The ``RelationshipProperty`` whose lazy load compiled to this statement, or None."""
    try:
        path = getattr(_compile_options(compiled), "_current_path", None)
        if path is None or not len(path):
            return None
        return getattr(path, "prop", None)
    except Exception:
        return None


def relationship_of(compiled: Any) -> str | None:
    """``"Author.books"`` for a lazy load of ``Author.books``, else None."""
    prop = relationship_property(compiled)
    return str(prop) if prop is not None else None


def loader_for(compiled: Any) -> str | None:
    """The eager loader to suggest: ``joinedload`` for many-to-one and one-to-one, else
    ``selectinload`` (one extra query for any number of parents, no row multiplication)."""
    prop = relationship_property(compiled)
    if prop is None:
        return None
    to_one = prop.direction is RelationshipDirection.MANYTOONE or not prop.uselist
    return f"{'joinedload' if to_one else 'selectinload'}({prop})"


def entity_of(compiled: Any) -> str | None:
    """The mapped class an ORM statement selects (``"Comment"``), or None for Core SQL."""
    try:
        statement = getattr(compiled, "statement", None)
        subject = getattr(statement, "_propagate_attrs", {}).get("plugin_subject")
        cls = getattr(subject, "class_", None)
        return cls.__name__ if cls is not None else None
    except Exception:
        return None


def entity_of_table(compiled: Any) -> str | None:
    """The mapped class of the table a statement writes (an ORM flush names no entity)."""
    entity = entity_of(compiled)
    if entity is not None:
        return entity
    try:
        from sqlalchemy.orm.mapper import _all_registries

        table = getattr(getattr(compiled, "statement", None), "table", None)
        if table is None:
            return None
        for registry in _all_registries():
            for mapper in registry.mappers:
                if mapper.local_table is table:
                    return str(mapper.class_.__name__)
    except Exception:
        return None
    return None

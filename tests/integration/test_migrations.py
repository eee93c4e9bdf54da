"""Schema migrations against a real PostgreSQL: each file applied once and only once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from services.aggregator.db.migrate import (
    SQL_DIR,
    MigrationError,
    apply_migrations,
    discover,
    migrate,
)


async def test_fresh_database_gets_every_migration_once(fresh_database: str) -> None:
    expected = [m.name for m in discover()]
    assert expected, "the project ships at least one migration"

    assert await migrate(fresh_database) == expected
    assert await migrate(fresh_database) == []  # a second run applies nothing

    conn = await asyncpg.connect(fresh_database)
    try:
        rows = await conn.fetch("SELECT name FROM schema_migrations ORDER BY version")
        assert [r["name"] for r in rows] == expected
        # the first migration really ran: its table exists
        assert await conn.fetchval("SELECT to_regclass('consumer_offsets') IS NOT NULL")
    finally:
        await conn.close()


async def test_concurrent_runners_apply_each_migration_once(fresh_database: str) -> None:
    results = await asyncio.gather(*(migrate(fresh_database) for _ in range(4)))
    applied = [name for result in results for name in result]
    assert sorted(applied) == sorted(m.name for m in discover())


async def test_new_file_is_applied_and_old_ones_are_not_rerun(fresh_database: str, tmp_path: Path) -> None:
    for path in SQL_DIR.glob("*.sql"):
        (tmp_path / path.name).write_text(path.read_text())
    conn = await asyncpg.connect(fresh_database)
    try:
        await apply_migrations(conn, tmp_path)
        (tmp_path / "9001_extra_table.sql").write_text("CREATE TABLE extra_table (id int);")
        assert await apply_migrations(conn, tmp_path) == ["9001_extra_table"]
        assert await apply_migrations(conn, tmp_path) == []
    finally:
        await conn.close()


async def test_edited_migration_is_refused(fresh_database: str, tmp_path: Path) -> None:
    (tmp_path / "0001_first.sql").write_text("CREATE TABLE first_table (id int);")
    conn = await asyncpg.connect(fresh_database)
    try:
        await apply_migrations(conn, tmp_path)
        (tmp_path / "0001_first.sql").write_text("CREATE TABLE first_table (id bigint);")
        with pytest.raises(MigrationError, match="changed after it was applied"):
            await apply_migrations(conn, tmp_path)
    finally:
        await conn.close()


async def test_failed_migration_leaves_nothing_half_applied(fresh_database: str, tmp_path: Path) -> None:
    (tmp_path / "0001_broken.sql").write_text("CREATE TABLE half (id int); SELECT no_such_function();")
    conn = await asyncpg.connect(fresh_database)
    try:
        with pytest.raises(asyncpg.PostgresError):
            await apply_migrations(conn, tmp_path)
        assert not await conn.fetchval("SELECT to_regclass('half') IS NOT NULL")
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == 0
    finally:
        await conn.close()


async def test_database_newer_than_code_is_refused(fresh_database: str, tmp_path: Path) -> None:
    (tmp_path / "0001_first.sql").write_text("CREATE TABLE first_table (id int);")
    (tmp_path / "0002_second.sql").write_text("CREATE TABLE second_table (id int);")
    conn = await asyncpg.connect(fresh_database)
    try:
        await apply_migrations(conn, tmp_path)
        (tmp_path / "0002_second.sql").unlink()
        with pytest.raises(MigrationError, match="does not know"):
            await apply_migrations(conn, tmp_path)
    finally:
        await conn.close()


def test_badly_named_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "first.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="NNNN_name.sql"):
        discover(tmp_path)

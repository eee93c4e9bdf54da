-- Day partitions made and dropped without deadlocking readers and writers.
--
-- 0002 made a partition with CREATE TABLE ... PARTITION OF, which holds an ACCESS EXCLUSIVE lock
-- on the parent until commit, and made every table's partition in one transaction: a monitor
-- query that read rollup_operations and then waited for rollup_histograms could deadlock with it
-- (seen once at an aggregator's start). Creating the table on its own (LIKE the parent, with its
-- indexes and constraints) and then attaching it takes only SHARE UPDATE EXCLUSIVE on the parent,
-- which neither SELECT nor INSERT conflicts with; the indexes made by LIKE are taken over by the
-- parent's indexes on ATTACH, so nothing is built twice.
CREATE OR REPLACE FUNCTION promptpulse_ensure_day_partitions(first_day date, last_day date)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    parent  text;
    day     date;
    child   text;
    created integer := 0;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('promptpulse_day_partitions'));
    FOR parent IN SELECT table_name FROM day_partitioned_tables ORDER BY table_name LOOP
        day := first_day;
        WHILE day <= last_day LOOP
            child := parent || '_p' || to_char(day, 'YYYYMMDD');
            IF to_regclass(quote_ident(child)) IS NULL THEN
                EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING ALL)', child, parent);
                EXECUTE format(
                    'ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                    parent, child,
                    day::timestamp AT TIME ZONE 'UTC', (day + 1)::timestamp AT TIME ZONE 'UTC');
                created := created + 1;
            END IF;
            day := day + 1;
        END LOOP;
    END LOOP;
    RETURN created;
END $$;

-- Dropping a partition cannot avoid an ACCESS EXCLUSIVE lock on its parent, so retention drops
-- one day at a time (every table's partition of that day in one transaction: raw rows and the
-- rollup minutes they fed still expire together), locking the parents in alphabetical order,
-- the order ingestion locks them in too; the caller bounds each wait with lock_timeout and
-- retries, so readers never queue long behind it (retention.py).
CREATE FUNCTION promptpulse_drop_day_partitions(day date)
RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE
    parent text;
    child  text;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('promptpulse_day_partitions'));
    FOR parent IN SELECT table_name FROM day_partitioned_tables ORDER BY table_name LOOP
        child := parent || '_p' || to_char(day, 'YYYYMMDD');
        IF to_regclass(quote_ident(child)) IS NOT NULL THEN
            EXECUTE format('LOCK TABLE %I IN ACCESS EXCLUSIVE MODE', parent);
            EXECUTE format('DROP TABLE %I', child);
            RETURN NEXT child;
        END IF;
    END LOOP;
END $$;

-- The days that have a partition of some day-partitioned table before cutoff.
CREATE FUNCTION promptpulse_day_partitions_before(cutoff date)
RETURNS SETOF date LANGUAGE sql STABLE AS $$
    SELECT DISTINCT to_date(right(c.relname, 8), 'YYYYMMDD') AS day
    FROM pg_inherits i
    JOIN pg_class c ON c.oid = i.inhrelid
    JOIN pg_class p ON p.oid = i.inhparent
    WHERE p.relname IN (SELECT table_name FROM day_partitioned_tables)
      AND c.relname ~ '_p[0-9]{8}$'
      AND to_date(right(c.relname, 8), 'YYYYMMDD') < cutoff
    ORDER BY 1
$$;

-- Replaced by the two functions above: it dropped every expired day in one transaction.
DROP FUNCTION promptpulse_drop_day_partitions_before(date);

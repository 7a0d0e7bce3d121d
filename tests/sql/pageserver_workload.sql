-- A workload for the pageserver proofs, in phases separated by "-- @phase" lines; the
-- test notes an LSN and a pg_dumpall after each phase. It reaches every built-in
-- resource manager a stock PostgreSQL 15 writes (Tablespace aside: basebackups hold
-- only the default and global tablespaces, see docs/pageserver.md) and every kind of
-- non-page state the pageserver keeps: relation sizes, truncation, VM bits, CLOG
-- across pages, multixacts, two-phase files, relmaps, database create and drop.

-- Heap, Btree, Storage CREATE, Standby LOCK, Heap2 MULTI_INSERT.
CREATE TABLE t (id int PRIMARY KEY, v text, n int);
INSERT INTO t SELECT g, md5(g::text), g % 10 FROM generate_series(1, 5000) g;
UPDATE t SET v = v || 'x' WHERE id % 3 = 0;
UPDATE t SET n = n + 1 WHERE id % 7 = 0;
DELETE FROM t WHERE id % 5 = 0;
CREATE TABLE copied (a int, b text);
COPY copied (a) FROM PROGRAM 'seq 1 3000';
-- Heap LOCK and a multixact: a key-share lock and an update in a subtransaction.
BEGIN;
SELECT id FROM t WHERE id = 1 FOR KEY SHARE;
SAVEPOINT a;
UPDATE t SET v = 'multi' WHERE id = 1;
SELECT id FROM t WHERE id = 2 FOR UPDATE;
COMMIT;
-- Aborts and subtransaction aborts.
BEGIN;
INSERT INTO t VALUES (100001, 'gone', 0);
ROLLBACK;
BEGIN;
INSERT INTO t VALUES (100002, 'kept', 0);
SAVEPOINT s1;
INSERT INTO t VALUES (100003, 'gone', 0);
ROLLBACK TO SAVEPOINT s1;
COMMIT;
-- Subtransactions with xids across a CLOG page (32768 transactions).
CREATE TABLE sub (i int);
DO $$
BEGIN
  FOR i IN 1..33000 LOOP
    BEGIN
      INSERT INTO sub VALUES (i);
    EXCEPTION WHEN others THEN NULL;
    END;
  END LOOP;
END $$;
-- Two-phase commit, and one transaction left prepared across the phase boundary.
BEGIN;
INSERT INTO t VALUES (100004, 'prepared', 0);
PREPARE TRANSACTION 'p1';
COMMIT PREPARED 'p1';
BEGIN;
INSERT INTO t VALUES (100005, 'prepared', 0);
PREPARE TRANSACTION 'p2';
ROLLBACK PREPARED 'p2';
BEGIN;
INSERT INTO t VALUES (100007, 'pending', 0);
PREPARE TRANSACTION 'pending';
-- @phase
COMMIT PREPARED 'pending';
-- Hash, Gin, Gist, SPGist, BRIN, Sequence, Generic (bloom), an unlogged table.
CREATE TABLE h (k int);
CREATE INDEX ON h USING hash (k);
INSERT INTO h SELECT g % 500 FROM generate_series(1, 20000) g;
DELETE FROM h WHERE k % 2 = 0;
CREATE TABLE g (a int[]);
CREATE INDEX ON g USING gin (a);
INSERT INTO g SELECT ARRAY[g % 100, g % 37, g] FROM generate_series(1, 5000) g;
CREATE TABLE gi (p point);
CREATE INDEX ON gi USING gist (p);
INSERT INTO gi SELECT point(g % 100, g / 100) FROM generate_series(1, 10000) g;
DELETE FROM gi WHERE p[0] < 10;
CREATE TABLE sp (p point);
CREATE INDEX ON sp USING spgist (p);
INSERT INTO sp SELECT point(g % 100, g / 100) FROM generate_series(1, 10000) g;
DELETE FROM sp WHERE p[0] < 10;
CREATE TABLE b (x int);
CREATE INDEX ON b USING brin (x) WITH (pages_per_range = 1);
INSERT INTO b SELECT g FROM generate_series(1, 20000) g;
SELECT brin_summarize_new_values('b_x_idx');
CREATE SEQUENCE s;
SELECT count(nextval('s')) FROM generate_series(1, 100);
CREATE EXTENSION bloom;
CREATE TABLE bl (a int, c int);
CREATE INDEX ON bl USING bloom (a, c);
INSERT INTO bl SELECT g, g * 2 FROM generate_series(1, 3000) g;
CREATE UNLOGGED TABLE scratch (x int PRIMARY KEY);
INSERT INTO scratch SELECT generate_series(1, 1000);
-- Heap2 PRUNE, VACUUM, VISIBLE, FREEZE_PAGE; Storage TRUNCATE of a shrinking table.
VACUUM t, h, g, gi, sp, b, bl, sub;
DELETE FROM sub WHERE i > 1000;
VACUUM FREEZE sub;
VACUUM FREEZE t;
-- VM bits cleared by later heap changes (flags in heap records, no VM image).
UPDATE t SET n = -1 WHERE id % 11 = 0;
DELETE FROM t WHERE id % 13 = 0;
INSERT INTO t VALUES (200000, 'after freeze', 0);
SELECT id FROM t WHERE id = 3 FOR SHARE;
-- @phase
-- RelMap UPDATE: rewrite a mapped catalog.
VACUUM FULL pg_class;
-- Database: both creation strategies, content in one, a drop.
CREATE DATABASE copied_db STRATEGY file_copy;
CREATE DATABASE logged_db STRATEGY wal_log;
DROP DATABASE copied_db;
-- LogicalMessage.
SELECT pg_logical_emit_message(true, 'strata', 'hello') IS NOT NULL;
-- XLOG: an online checkpoint, hint bits after it (FPI_FOR_HINT with checksums).
CHECKPOINT;
SELECT count(*) FROM t;
SELECT count(*) FROM copied;
TRUNCATE copied;
INSERT INTO copied VALUES (1, 'after truncate');
INSERT INTO t VALUES (100006, 'last', 0);

-- A workload that reaches every built-in resource manager a stock PostgreSQL 15
-- writes without extensions beyond contrib's bloom. @TABLESPACE_DIR@ is replaced by
-- the test with an empty directory the server owns.

-- Heap, Btree, Storage CREATE, Standby LOCK.
CREATE TABLE t (id int PRIMARY KEY, v text, n int);
INSERT INTO t SELECT g, md5(g::text), g % 10 FROM generate_series(1, 5000) g;
UPDATE t SET v = v || 'x' WHERE id % 3 = 0;
UPDATE t SET n = n + 1 WHERE id % 7 = 0;
DELETE FROM t WHERE id % 5 = 0;
-- Heap2 MULTI_INSERT.
CREATE TABLE copied (a int, b text);
COPY copied (a) FROM PROGRAM 'seq 1 3000';
-- Heap LOCK, then a multixact: a row key-share locked by the transaction and updated
-- by one of its subtransactions.
BEGIN;
SELECT id FROM t WHERE id = 1 FOR KEY SHARE;
SAVEPOINT a;
UPDATE t SET v = 'multi' WHERE id = 1;
SELECT id FROM t WHERE id = 2 FOR UPDATE;
COMMIT;
-- Transaction ABORT and subtransaction aborts.
BEGIN;
INSERT INTO t VALUES (100001, 'gone', 0);
ROLLBACK;
BEGIN;
INSERT INTO t VALUES (100002, 'kept', 0);
SAVEPOINT s1;
INSERT INTO t VALUES (100003, 'gone', 0);
ROLLBACK TO SAVEPOINT s1;
COMMIT;
-- Enough subtransactions with xids to cross a CLOG page (32768 transactions) and a
-- commit record that spans several WAL pages.
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
-- Two-phase commit.
BEGIN;
INSERT INTO t VALUES (100004, 'prepared', 0);
PREPARE TRANSACTION 'p1';
COMMIT PREPARED 'p1';
BEGIN;
INSERT INTO t VALUES (100005, 'prepared', 0);
PREPARE TRANSACTION 'p2';
ROLLBACK PREPARED 'p2';
-- Hash, Gin, Gist, SPGist, BRIN, Sequence, Generic (bloom).
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
-- Heap2 PRUNE, VACUUM, VISIBLE, FREEZE_PAGE; Storage TRUNCATE from a shrinking table.
VACUUM t, h, g, gi, sp, b, bl, sub;
DELETE FROM sub WHERE i > 1000;
VACUUM FREEZE sub;
VACUUM FREEZE t;
-- RelMap UPDATE: rewrite a mapped catalog.
VACUUM FULL pg_class;
-- Database: both creation strategies and a drop.
CREATE DATABASE copied_db STRATEGY file_copy;
CREATE DATABASE logged_db STRATEGY wal_log;
DROP DATABASE copied_db;
-- Tablespace CREATE, and a relation copied into it page by page (XLOG FPI).
CREATE TABLESPACE ts LOCATION '@TABLESPACE_DIR@';
ALTER TABLE copied SET TABLESPACE ts;
CREATE TABLE gone (x int) TABLESPACE ts;
DROP TABLE gone;
-- LogicalMessage.
SELECT pg_logical_emit_message(true, 'strata', 'hello') IS NOT NULL;
-- XLOG: an online checkpoint, hint bits after it (FPI_FOR_HINT with checksums), a switch.
CHECKPOINT;
SELECT count(*) FROM t;
SELECT count(*) FROM copied;
SELECT pg_switch_wal() IS NOT NULL;
INSERT INTO t VALUES (100006, 'after switch', 0);

-- Visitor ids are opaque strings compared for equality, never sorted for a person to read: they
-- compare byte by byte (COLLATE "C") rather than by the database's locale. Every click's COPY
-- inserts into clicks_program_visitor, and each duplicate probe of a click looks it up there:
-- under a locale other than C or POSIX (C.UTF-8 and en_US.UTF-8 included) each comparison in the
-- index went through strcoll on copies of both strings. Equality is the same under any
-- deterministic collation, so every query finds the same rows. The tables whose visitor ids are
-- compared with the clicks' change with them, so their indexes stay usable in those joins (an
-- index serves a comparison only in its own collation). No table is rewritten; the indexes on
-- these columns are rebuilt.
ALTER TABLE clicks ALTER COLUMN visitor_id TYPE text COLLATE "C";
ALTER TABLE conversions ALTER COLUMN visitor_id TYPE text COLLATE "C";
ALTER TABLE customer_visitors ALTER COLUMN visitor_id TYPE text COLLATE "C";

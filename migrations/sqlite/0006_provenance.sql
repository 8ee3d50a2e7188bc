-- Provenance per result (issue 12). Keep in step with the other dialect's file.
-- What the attempt that produced the result ran with, as its worker
-- reported it with Complete (NULL: unknown, e.g. an older worker).
ALTER TABLE trials ADD COLUMN code_version TEXT;
ALTER TABLE trials ADD COLUMN libtorch TEXT;
ALTER TABLE trials ADD COLUMN device_name TEXT;
ALTER TABLE trials ADD COLUMN dataset_sha256 TEXT;

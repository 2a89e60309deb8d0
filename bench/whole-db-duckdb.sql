-- The DuckDB side of bench/whole-db.sh: every BellSystems SQLite table into the same
-- PostgreSQL schema, parents before children, with the casts a DuckDB user writes (its
-- sqlite_scanner reads DATETIME as TIMESTAMP and BOOLEAN as BIGINT). duckdb-load.py runs
-- these between BEGIN and COMMIT.
INSERT INTO pg.public.melody_drafts SELECT id, name, notes_json, audio, is_published::BOOLEAN, created_at::TIMESTAMPTZ FROM s.melody_drafts;
INSERT INTO pg.public.built_melodies SELECT id, draft_id, name, firmware, built_at::TIMESTAMPTZ FROM s.built_melodies;
INSERT INTO pg.public.mfg_audit_log SELECT id, serial, action, details, created_at::TIMESTAMPTZ FROM s.mfg_audit_log;
INSERT INTO pg.public.device_alerts SELECT id, device_serial, kind, message, resolved::BOOLEAN, created_at::TIMESTAMPTZ FROM s.device_alerts;
INSERT INTO pg.public.crm_sync_state SELECT key, value, updated_at::TIMESTAMPTZ FROM s.crm_sync_state;
INSERT INTO pg.public.crm_quotations SELECT id, customer_id, number, total::DECIMAL(12, 2), status, created_at::TIMESTAMPTZ FROM s.crm_quotations;
INSERT INTO pg.public.crm_quotation_items SELECT id, quotation_id, description, qty, unit_price::DECIMAL(12, 2) FROM s.crm_quotation_items;
INSERT INTO pg.public.crm_media SELECT id, customer_id, path, mime, created_at::TIMESTAMPTZ FROM s.crm_media;
INSERT INTO pg.public.crm_comms_log SELECT id, customer_id, channel, direction, body, occurred_at::TIMESTAMPTZ FROM s.crm_comms_log;
INSERT INTO pg.public.commands SELECT id, device_serial, command, payload, sent_at::TIMESTAMPTZ, acked::BOOLEAN FROM s.commands;
INSERT INTO pg.public.heartbeats SELECT id, device_serial, uptime_s, rssi, received_at::TIMESTAMPTZ FROM s.heartbeats;
INSERT INTO pg.public.device_logs SELECT id, device_serial, level, message, device_timestamp, received_at::TIMESTAMPTZ FROM s.device_logs;

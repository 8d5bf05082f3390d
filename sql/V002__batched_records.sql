-- V002: batched records (issue 7). A record of the XP topic may carry a batch of one student's
-- events (schemas/xp_event_batch.v1.json); record_index is an event's place in its record, so
-- (topic, partition, offset, record_index) is the event's source position. 0 for a record of
-- one event, which every row written before this migration is.
ALTER TABLE xp_events ADD COLUMN record_index integer NOT NULL DEFAULT 0;

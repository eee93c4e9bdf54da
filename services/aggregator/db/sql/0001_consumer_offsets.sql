-- Kafka offsets the aggregator has applied, committed in the same transaction as the rows and
-- rollup deltas they produced, so a restart resumes exactly after the last committed batch.
CREATE TABLE consumer_offsets (
    consumer_group text   NOT NULL,
    topic          text   NOT NULL,
    kafka_partition integer NOT NULL,
    next_offset    bigint NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, kafka_partition)
);

-- Feedback is counted at query time, joined to its request on (deployment, request id): its
-- event names no variant and may be stored before its request (issue 15, findings 1 and 7).
-- The metrics routes read one deployment's feedback over a range of request start times.
CREATE INDEX feedback_deployment_start ON feedback (deployment, request_start_time);

-- rollup_feedback is no longer written or read. It stays until a later migration drops it:
-- migrations run before a rollout, and replicas of the previous version write it until replaced.
COMMENT ON TABLE rollup_feedback IS
    'Unused since migration 0006 (feedback is counted from the feedback table); kept for replicas of the previous version during a rollout.';

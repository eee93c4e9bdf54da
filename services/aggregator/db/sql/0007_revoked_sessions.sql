-- Browser sessions ended with DELETE /v1/session (issue 15, finding 6). A session cookie is
-- signed, not stored, so any replica accepts it; ending one must hold on every replica, so the
-- ended session ids live here, where each replica looks a cookie up before honouring it. A row is
-- needed only until the cookie would have expired anyway; rows past that are deleted as new ones
-- are added.
CREATE TABLE revoked_sessions (
    session_id text        PRIMARY KEY,  -- the random id inside the cookie (not a secret alone)
    expires_at timestamptz NOT NULL,     -- the cookie's own expiry
    revoked_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX revoked_sessions_expiry ON revoked_sessions (expires_at);

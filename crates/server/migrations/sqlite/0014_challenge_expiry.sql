-- Expired sign-in challenges are deleted whenever one is issued.
CREATE INDEX auth_challenges_expiry ON auth_challenges (expires_at_ms);

-- Human labels per metric sent with feedback ({"relevance": 4}), each on its metric's scale:
-- what the judges' agreement with people is measured against (GET .../agreement).
ALTER TABLE feedback ADD COLUMN labels jsonb NOT NULL DEFAULT '{}'::jsonb;

"""Run records (schema, validation, provenance) and the leaderboard built from them."""

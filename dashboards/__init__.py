"""Usage dashboards: each user's own jobs, tokens and cost per day, and the staff's view
across all users with the state of the background work. Reads only (marketplace and
accounts data); it sits above both, so neither imports it."""

-- The points a report reads for every trial (issue 14: a report of 100,000
-- trials): `diverged_step`, `train_images_used` and the `final/<name>`
-- values. Keep in step with the other dialect's file. A partial index: it
-- holds only these rare points, so the report finds them without probing
-- each trial's curves, and the database keeps it true on every path that
-- writes or deletes points.
CREATE INDEX metrics_report ON metrics (trial_id, name, step)
    WHERE name = 'diverged_step' OR name = 'train_images_used' OR name LIKE 'final/%';

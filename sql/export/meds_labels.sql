-- meds_labels: one task's labels in the MEDS label schema (subject_id, prediction_time,
-- boolean_value): one row per cohort stay whose label is not null, at its t0.
-- {{label}} is the task's label column of the cohort (0/1, null when the task excludes
-- the stay, e.g. readmission after a death in hospital).
SELECT
    CAST(subject_id AS BIGINT) AS subject_id,
    CAST(prediction_time AS TIMESTAMP) AS prediction_time,
    {{label}} = 1 AS boolean_value
FROM cohort
WHERE {{label}} IS NOT NULL
ORDER BY subject_id, prediction_time

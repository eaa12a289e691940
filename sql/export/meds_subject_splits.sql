-- meds_subject_splits: metadata/subject_splits.parquet, the cohort's subject-level split
-- under MEDS' split names (train, tuning = our val, held_out = our test).
SELECT DISTINCT CAST(subject_id AS BIGINT) AS subject_id, CASE split WHEN 'train' THEN 'train' WHEN 'val' THEN 'tuning'
                WHEN 'test' THEN 'held_out' END AS split
FROM cohort
ORDER BY subject_id

-- cohort_stays: the stays of the cohort (all inclusion rules hold) with their split.
-- The labels come from the task queries (sql/tasks/<task>.sql, one per registered task),
-- which read this view; hospital_expire_flag is here for them.
SELECT
    c.stay_id,
    c.subject_id,
    c.hadm_id,
    c.intime,
    c.outtime,
    c.prediction_time,
    c.admittime,
    c.dischtime,
    c.deathtime,
    c.age,
    c.gender,
    CASE
        WHEN split_bucket(c.subject_id) < 70 THEN 'train'
        WHEN split_bucket(c.subject_id) < 80 THEN 'val'
        ELSE 'test'
    END AS split,
    c.hospital_expire_flag
FROM cohort_candidates AS c
WHERE c.rule_1_joined
  AND c.rule_2_adult
  AND c.rule_3_first_stay
  AND c.rule_4_min_stay
  AND c.rule_5_in_hospital_at_t0

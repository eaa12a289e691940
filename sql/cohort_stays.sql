-- cohort_stays: the stays of the cohort (all inclusion rules hold) with labels and split.
-- Variables set by the runner: long_stay (default 7 days), readmission_window (30 days).
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
    -- mortality: died in this hospital admission
    CAST(c.hospital_expire_flag AS TINYINT) AS mortality,
    -- long_los: ICU stay strictly longer than long_stay (exactly 7 days is 0)
    CAST(c.outtime > c.intime + getvariable('long_stay') AS TINYINT) AS long_los,
    -- readmission: another admission with dischtime < admittime_next <= dischtime + 30 d;
    -- NULL when the patient died in this admission
    CASE
        WHEN c.hospital_expire_flag = 1 THEN NULL
        WHEN EXISTS (
            SELECT 1
            FROM staged_admissions AS n
            WHERE n.subject_id = c.subject_id
              AND n.hadm_id <> c.hadm_id
              AND n.admittime > c.dischtime
              AND n.admittime <= c.dischtime + getvariable('readmission_window')
        ) THEN 1
        ELSE 0
    END::TINYINT AS readmission
FROM cohort_candidates AS c
WHERE c.rule_1_joined
  AND c.rule_2_adult
  AND c.rule_3_first_stay
  AND c.rule_4_min_stay
  AND c.rule_5_in_hospital_at_t0

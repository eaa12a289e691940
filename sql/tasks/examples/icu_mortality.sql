-- icu_mortality (an example task, not registered by default; tests/test_tasks.py registers
-- it): died in the ICU, i.e. the admission's deathtime is at or before the stay's outtime.
-- NULL when the patient died in hospital but the death time is not recorded: whether
-- that death was in the ICU is unknown.
SELECT
    stay_id,
    CASE
        WHEN deathtime IS NOT NULL THEN (deathtime <= outtime)::TINYINT
        WHEN hospital_expire_flag = 1 THEN NULL
        ELSE 0
    END AS label
FROM cohort_stays

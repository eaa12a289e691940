-- cohort_candidates: every staged ICU stay with the inclusion rules of the cohort spec as
-- flags, in order (cohort_stays keeps the stays passing all; cohort_flow counts them).
-- Variables set by the runner: observation_window (W, default 48 h).
WITH stays AS (
    SELECT
        i.stay_id,
        i.subject_id,
        i.hadm_id,
        i.intime,
        i.outtime,
        i.intime + getvariable('observation_window') AS prediction_time,   -- t0
        a.admittime,
        a.dischtime,
        a.deathtime,
        a.hospital_expire_flag,
        p.gender,
        p.anchor_age + (year(a.admittime) - p.anchor_year) AS age,
        a.hadm_id IS NOT NULL AND p.subject_id IS NOT NULL AS joined,
        -- first ICU stay of the admission: earliest intime, ties to the lowest stay_id
        row_number() OVER (PARTITION BY i.hadm_id ORDER BY i.intime, i.stay_id) AS icu_seq
    FROM staged_icustays AS i
    LEFT JOIN staged_admissions AS a ON a.hadm_id = i.hadm_id
    LEFT JOIN staged_patients AS p ON p.subject_id = i.subject_id
)
SELECT
    *,
    -- 1. joins admissions on hadm_id and patients on subject_id
    joined AS rule_1_joined,
    -- 2. age = anchor_age + (year(admittime) - anchor_year) >= 18
    coalesce(age >= 18, false) AS rule_2_adult,
    -- 3. first ICU stay of its hospital admission
    icu_seq = 1 AS rule_3_first_stay,
    -- 4. outtime - intime >= W (exactly W is in)
    outtime >= prediction_time AS rule_4_min_stay,
    -- 5. still in hospital and alive at t0
    coalesce(dischtime >= prediction_time, false)
        AND (deathtime IS NULL OR deathtime >= prediction_time) AS rule_5_in_hospital_at_t0
FROM stays
